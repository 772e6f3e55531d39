"""The master process: job manager, scheduler, executor liveness.

Theory of operation: one reactor. A ROUTER channel at ``master-addr`` serves
clients and executors alike (its handler table is below); a PUB socket sends the
master's heartbeat; a SUB socket receives every executor's heartbeat and, through
its monitor, connection events. Every change of a job or a task goes through the
``JobManager``; after each change the master dispatches whatever can now be
placed and persists dirty jobs on a short timer.

Leadership (``zdf.master.election``): a standby campaigns once, then watches the
election key with a metastore watch whose socket is one more reader of this
reactor, and campaigns again the moment the key is deleted; it also looks at
the key every ``ELECTION_RECHECK`` seconds, or every ``ELECTION_POLL`` seconds
while it has no watch or its watch has gone silent. The leader's framework
writes are fenced by its epoch (``zdf.master.persist``); a refused one means
another master leads, and this one steps down (fail-stop) instead of acting on
a stale view.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zdf import protocol as P
from zdf.config import MasterConfig
from zdf.errors import JobError, NotLeader, PermissionDenied, ProtocolError, ZdfError
from zdf.jobs.cost import task_cost
from zdf.jobs.spec import JobSpec
from zdf.master import access, persist
from zdf.master.access import validate_registration
from zdf.master.election import LeaderInfo, LeaderWatch, LostLeadership, MasterElection
from zdf.master.endpoints import EndpointDirectory
from zdf.master.fnqueue import FunctionQueue
from zdf.master.heartbeats import HeartbeatPublisher, HeartbeatSubscriber
from zdf.master.jobs import Dispatch, JobManager, JobRecord
from zdf.master.limits import check_job
from zdf.master.liveness import ExecutorLiveness, Transition
from zdf.master.persist import FrameworkStore
from zdf.master.retention import SWEEP_INTERVAL, JobRetention
from zdf.master.router import master_router
from zdf.master.staging import SubmissionStaging
from zdf.master.starts import StartSender
from zdf.master.states import (
    GONE_EXECUTOR_STATES,
    TERMINAL_JOB_STATES,
    ExecutorState,
    TaskState,
)
from zdf.master.tasklogs import TaskLogRelay
from zdf.master.writebatch import FencedBatch
from zdf.metastore.client import MetaClient
from zdf.observe.logs import task_fields
from zdf.wire.batchcall import serve_batch
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import DEFER, Call, Channel

log = logging.getLogger(__name__)

PERSIST_INTERVAL = 0.05
ELECTION_POLL = 0.1
"""How often a standby without a working (or a silent) watch looks at the election key."""
ELECTION_RECHECK = 1.0
"""How often a standby whose watch works looks anyway (a safety net, one read)."""
TAKEOVER_GRACE_TTLS = 2
RETRY_SCHEDULE = 0.2
FREEZE_TASKS = 10_000
"""A job this large is moved out of the garbage collector's sight once stored."""
PLACEMENT_CHECK = 0.25
"""How often jobs waiting for a placement are checked against their placement-timeout."""
STANDBY_OPS = frozenset({P.PING, P.CLUSTER_STATUS})  # what a standby still answers
EXECUTOR_SESSION_TTL = 10.0
FINAL_REPORTS = frozenset({"finished", "failed", "canceled"})


@dataclass
class ExecutorInfo:
    executor_id: str
    addr: str
    slots: int
    host: str
    pid: int
    peer: bytes
    worker_budget: int = 0  # descriptors a worker process lets its tasks use (0: unknown)
    registered_at: float = field(default_factory=time.time)
    heartbeats: int = 0
    # Given at registration, over the executor's own connection: its heartbeats and
    # its registering again must show it (no one else can take over its id).
    session: str = field(default_factory=lambda: os.urandom(16).hex())

    def to_dict(self, state: ExecutorState | None, last_seen: float | None) -> dict[str, Any]:
        return {
            "id": self.executor_id,
            "addr": self.addr,
            "slots": self.slots,
            "host": self.host,
            "pid": self.pid,
            "state": (state or ExecutorState.DEAD).value,
            "last_seen_s": None if last_seen is None else round(time.monotonic() - last_seen, 3),
            "registered_at": self.registered_at,
        }


class Master:
    def __init__(
        self,
        config: MasterConfig,
        meta: MetaClient | None,
        reactor: Reactor | None = None,
    ):
        self.config = config
        self.reactor = reactor or Reactor()
        self.epoch = 0  # the election's epoch once leading
        self.leader: LeaderInfo | None = None
        self.election = (
            MasterElection(
                meta,
                {
                    "name": config.name,
                    "addr": config.public_addr,
                    "heartbeat_addr": config.public_heartbeat_addr,
                },
                config.election_ttl,
            )
            if meta is not None
            else None
        )
        self.jobs = JobManager()
        self.staging = SubmissionStaging()
        self.store = FrameworkStore(meta) if meta is not None else None
        self.liveness = ExecutorLiveness(config.keepalive_interval, config.keepalive_ttl)
        self.executors: dict[str, ExecutorInfo] = {}
        self._by_peer: dict[bytes, str] = {}
        self._by_addr: dict[str, str] = {}
        self._waiters: dict[str, list[Call]] = {}
        self.checkpoints: dict[tuple[str, str], bytes] = {}
        self.started = time.time()
        handlers: dict[str, Callable[[Call], Any]] = {
            P.PING: lambda call: {
                "master": config.name,
                "epoch": self.epoch,
                "leading": self.leading,
            },
            P.REGISTER: self.on_register,
            P.TASK_STATE: self.on_task_state,
            P.PROGRESS: self.on_progress,
            P.PUBLISH_ENDPOINT: self.on_publish_endpoint,
            P.CHECKPOINT: self.on_checkpoint,
            P.SUBMIT_JOB: self.on_submit_job,
            P.SUBMIT_PART: self.on_submit_part,
            P.JOB_LIST: self.on_job_list,
            P.JOB_STATUS: self.on_job_status,
            P.JOB_CANCEL: self.on_job_cancel,
            P.WAIT_JOB: self.on_wait_job,
            P.EXECUTOR_LIST: self.on_executor_list,
            P.CLUSTER_STATUS: self.on_cluster_status,
        }
        self.channel = Channel(
            self.reactor,
            master_router(config.master_addr),  # bounds, and no silent drop (its docstring)
            handlers,
            name="master",
            roles=access.OPERATIONS,
        )
        self.channel.on_traffic = self._on_traffic
        self.channel.gate = self._gate
        self.channel.enable_chunks(config.max_value_bytes)  # values of any size (bigmsg)
        self.functions = FunctionQueue(
            self.channel,
            executor_alive=lambda e: self.liveness.state(e) is ExecutorState.ALIVE,
            allow_pickle=config.allow_pickle,
            max_per_client=config.max_queued_fn_per_client,
            client_grace=config.client_grace,
        )
        self.functions.deps.depth = config.fn_pipeline_depth
        self.channel.handlers.update(self.functions.handlers())
        self.channel.handlers[P.FN_HELLO] = self.on_fn_hello
        self.channel.handlers[P.WORKER_LOST] = self.on_worker_lost
        self.channel.handlers[P.DEREGISTER] = self.on_deregister
        self.channel.handlers[P.BATCH] = serve_batch  # a turn's reports as one message
        self.retention = JobRetention(self.jobs, self.store, config.job_retention, self._fenced)
        self.channel.handlers.update(self.retention.handlers())
        self.reactor.call_every(SWEEP_INTERVAL, self._sweep_jobs)
        sessions = self.functions.sessions  # clients gone: their results dropped
        self.reactor.call_every(sessions.check_interval, sessions.expire)
        self.task_logs = TaskLogRelay(self.channel, self._alive_peers)
        self.channel.handlers[P.TASK_LOGS] = self.task_logs.on_task_logs
        self.publisher = HeartbeatPublisher(config.heartbeat_addr, config.name, self.epoch)
        self.subscriber = HeartbeatSubscriber(
            self.reactor,
            self._on_heartbeat,
            server_role="executor",
            on_down=self._on_connection_down,
            on_gone=self._on_connection_gone,
            heartbeat_ms=max(1, int(config.keepalive_interval * 1000)),
        )
        self.reactor.call_every(config.keepalive_interval, self._beat, now=True)
        self._liveness_due: Timer | None = None
        self.reactor.call_every(config.keepalive_interval / 2, self._check_liveness)
        self.reactor.call_every(PERSIST_INTERVAL, self._persist)
        self.reactor.call_every(PLACEMENT_CHECK, self._expire_unplaced)
        self.reactor.call_every(EXECUTOR_SESSION_TTL / 3, self._keep_leases)
        self.batch = (
            FencedBatch(self.reactor, self.store.apply_fenced, self._step_down)
            if self.store is not None
            else None
        )
        self._schedule_due: Timer | None = None
        self.endpoints = EndpointDirectory(
            self.reactor,
            self.channel,
            self.jobs,
            lambda e: info.peer if (info := self.executors.get(e)) else None,
        )
        self.starts = StartSender(
            self.reactor,
            self.channel,
            peer_of=lambda e: info.peer if (info := self.executors.get(e)) else None,
            epoch=lambda: self.epoch,
            endpoints_of=self.endpoints.as_list,
            checkpoint_of=lambda job_id, task_id: self.checkpoints.get((job_id, task_id)),
            standing=self._start_standing,
            refused=self._start_refused,
            timeout=config.rpc_timeout,
        )
        self.lost_leadership = False
        self._master_lease: int | None = None
        self._leader_watch: LeaderWatch | None = None
        self._leader_watch_timer: Timer | None = None
        self._last_campaign = float("-inf")
        if self.election is None:
            self._take_over(epoch=int(time.time() * 1000))
        else:
            self.reactor.call_every(ELECTION_POLL, self._election_tick, now=True)
            self.reactor.call_every(config.election_ttl / 4, self._keep_leadership)

    # -- leadership ---------------------------------------------------------
    @property
    def leading(self) -> bool:
        return self.epoch != 0

    def _gate(self, call: Call) -> None:
        if not self.leading and call.op not in STANDBY_OPS:
            hint = self.leader.addr if self.leader is not None else None
            raise NotLeader(f"master {self.config.name} is a standby", leader=hint)

    def _election_tick(self) -> None:
        """A standby campaigns on every tick while it cannot watch the key, else seldom."""
        if self.leading:
            return
        watched = self._leader_watch is not None and self._leader_watch.fresh
        if not watched or time.monotonic() - self._last_campaign >= ELECTION_RECHECK:
            self._campaign()

    def _campaign(self) -> None:
        if self.leading or self.election is None:
            return
        self._last_campaign = time.monotonic()
        try:
            leader = self.election.campaign()
        except ZdfError as exc:
            log.warning("campaign failed: %s", exc)
            return
        if self.election.leading and self.election.epoch is not None:
            self._close_leader_watch()
            self._take_over(self.election.epoch)
            return
        if leader is not None and leader != self.leader:
            log.info("standby; the leader is %s at %s", leader.name, leader.addr)
            self.leader = leader
        if self._leader_watch is None:
            self._open_leader_watch()

    def _open_leader_watch(self) -> None:
        """Watch the election key from the campaign's revision on (nothing is missed)."""
        assert self.election is not None
        try:
            watch = self.election.watch()
        except ZdfError as exc:
            log.warning("cannot watch the election key (%s); polling it instead", exc)
            return
        self._leader_watch = watch
        self.reactor.add_reader(watch.socket, self._on_leader_watch)
        self._leader_watch_timer = self.reactor.call_every(
            watch.check_interval, self._on_leader_watch
        )

    def _close_leader_watch(self) -> None:
        if self._leader_watch_timer is not None:
            self._leader_watch_timer.cancel()
            self._leader_watch_timer = None
        if self._leader_watch is not None:
            self.reactor.remove_reader(self._leader_watch.socket)
            self._leader_watch.close()
            self._leader_watch = None

    def _on_leader_watch(self) -> None:
        watch = self._leader_watch
        if watch is None or self.leading:
            return
        try:
            vacated = watch.poll()
        except ZdfError as exc:
            log.warning("the election watch broke (%s); polling the key until it is back", exc)
            self._close_leader_watch()
            return
        if vacated:
            log.info("the election key was deleted; campaigning")
            self._campaign()
        elif watch.leader is not None and watch.leader != self.leader:
            log.info("standby; the leader is %s at %s", watch.leader.name, watch.leader.addr)
            self.leader = watch.leader

    def _keep_leadership(self) -> None:
        if not self.leading or self.election is None:
            return
        try:
            still = self.election.keepalive()
        except ZdfError as exc:
            log.warning("leadership keepalive failed: %s", exc)
            return
        if not still:
            self._step_down("its lease is gone")

    def _step_down(self, why: str) -> None:
        # Someone else may lead now: stop acting at once (fail-stop), never split-brain.
        log.error("master %s lost its leadership (%s); stopping", self.config.name, why)
        self.lost_leadership = True
        self.epoch = 0
        self.jobs.epoch = 0
        self.reactor.stop()

    def _fenced(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)``, a framework write from a handler; refused means another
        master leads: the master steps down and the caller is told to find the new one."""
        try:
            write(*args)
        except LostLeadership as exc:
            self._step_down(str(exc))
            raise NotLeader(f"master {self.config.name} lost its leadership", leader=None) from None

    def _take_over(self, epoch: int) -> None:
        """Lead from ``epoch``: rebuild jobs, checkpoints and endpoints from the metastore."""
        started = time.monotonic()
        self.epoch = epoch
        self.jobs.epoch = epoch
        self.publisher.epoch = epoch
        if self.store is not None and self.election is not None:
            self.store.epoch = epoch
        previous = self.leader
        self.leader = LeaderInfo(
            self.config.name, self.config.public_addr, self.config.public_heartbeat_addr, epoch
        )
        if self.election is not None:  # what an unknown future may be (zdf.master.fndeps)
            self.functions.deps.took_over(epoch, previous.name if previous is not None else "")
        if self.store is not None:
            self._restore()
            info = {"name": self.config.name, "addr": self.config.public_addr, "epoch": epoch}
            info["heartbeat_addr"] = self.config.public_heartbeat_addr
            try:
                self._master_lease = self.store.register_master(
                    self.config.name, info, EXECUTOR_SESSION_TTL
                )
            except ZdfError as exc:
                log.warning("could not record the master in discovery: %s", exc)
        self._beat()
        log.info(
            "master %s leads (epoch %d), state rebuilt in %.1f ms",
            self.config.name,
            epoch,
            1000 * (time.monotonic() - started),
        )

    def _restore(self) -> None:
        assert self.store is not None
        # Executors still running tasks get a grace to find this master and register
        # again (they notice the old one is gone after a keepalive TTL, then retry).
        now = time.monotonic() + TAKEOVER_GRACE_TTLS * self.config.keepalive_ttl
        for doc in self.store.load_jobs():
            try:
                job = self.jobs.restore(doc)
            except (KeyError, ValueError, ZdfError) as exc:
                log.warning("skipping job record %s: %s", doc.get("id"), exc)
                continue
            for task in job.tasks.values():
                placed = task.state in (TaskState.SCHEDULED, TaskState.RUNNING)
                if task.executor and placed and self.liveness.state(task.executor) is None:
                    self.liveness.add(task.executor, now)
        self.checkpoints.update(self.store.load_checkpoints())
        self.endpoints.restore(self.store.load_endpoints())
        if self.jobs.jobs:
            log.info("restored %d jobs from the metastore", len(self.jobs.jobs))

    # -- lifecycle ----------------------------------------------------------
    def run(self) -> None:
        log.info("master %s listening at %s", self.config.name, self.config.master_addr)
        self.reactor.run()

    def close(self) -> None:
        self._persist()
        if self.batch is not None:
            self.batch.flush()
        self._close_leader_watch()
        self.channel.close()
        self.publisher.close()
        self.subscriber.close()

    # -- liveness -----------------------------------------------------------
    def _beat(self) -> None:
        if self.leading:
            self.publisher.beat()

    def _on_traffic(self, peer: bytes | None) -> None:
        executor_id = self._by_peer.get(peer) if peer is not None else None
        if executor_id is not None:
            self._apply_liveness(self.liveness.seen(executor_id, time.monotonic()))
        else:
            self.functions.sessions.heard(peer)  # a client's results stay while it talks

    def _on_heartbeat(self, body: dict[str, Any]) -> None:
        executor_id = body["id"]
        info = self.executors.get(executor_id)
        if info is not None and body.get("session") == info.session:
            info.heartbeats += 1
            self._apply_liveness(self.liveness.seen(executor_id, time.monotonic()))

    def _on_connection_down(self, addr: str) -> None:
        executor_id = self._by_addr.get(addr)
        if executor_id is not None:
            self._apply_liveness(self.liveness.disconnected(executor_id))

    def _on_connection_gone(self, addr: str) -> None:
        executor_id = self._by_addr.get(addr)
        if executor_id is not None:
            self._apply_liveness(self.liveness.refused(executor_id))

    def _check_liveness(self) -> None:
        if not self.leading:
            return
        now = time.monotonic()
        before = self.liveness.forgiven
        moves = self.liveness.tick(now)
        stalled = self.liveness.forgiven - before
        if stalled > self.config.keepalive_ttl / 2:
            log.warning("master loop stalled %.2fs: not held against executors", stalled)
        for move in moves:
            self._apply_liveness(move)
        # Between two ticks, check again exactly when the next silence runs out.
        due = self.liveness.next_due()
        soon = now + self.config.keepalive_interval / 2
        if due is not None and due < soon and self._liveness_due is None:
            self._liveness_due = self.reactor.call_later(
                max(0.0, due - now) + 0.001, self._due_check
            )

    def _due_check(self) -> None:
        self._liveness_due = None
        self._check_liveness()

    def _apply_liveness(self, move: Transition | None) -> None:
        if move is None:
            return
        executor_id, old, new = move
        log.info("executor %s: %s -> %s", executor_id, old.value, new.value)
        if new in GONE_EXECUTOR_STATES:
            self._executor_dead(executor_id)
        elif new is ExecutorState.ALIVE:
            # Its workers were skipped while it was suspect: nothing else may come to
            # pump the function queue (a client blocked on backpressure sends nothing).
            self.functions.pump()

    def _executor_dead(self, executor_id: str) -> None:
        info = self.executors.get(executor_id)
        if info is not None:
            self.subscriber.disconnect(info.addr)
            self._by_peer.pop(info.peer, None)
            self._by_addr.pop(info.addr, None)
        if self.store is not None:
            self.store.forget_executor(executor_id)
        self.functions.worker_lost(executor_id)
        moved = self.jobs.executor_lost(executor_id)
        if moved:
            log.info("rescheduling %d tasks of dead executor %s", len(moved), executor_id)
        self._schedule()

    def _keep_leases(self) -> None:
        if self.store is None or not self.leading:
            return
        alive = [e for e in self.executors if self.liveness.state(e) not in GONE_EXECUTOR_STATES]
        try:
            if self._master_lease is not None:
                self.store.meta.lease_keepalive(self._master_lease)
            self.store.keep_executors_alive(alive)
        except ZdfError as exc:
            log.warning("lease keepalive failed: %s", exc)

    # -- executors ----------------------------------------------------------
    def on_register(self, call: Call) -> Any:
        body = P.fields(call.body, executor_id=str, addr=str, slots=int)
        executor_id = body["executor_id"]
        assert call.peer is not None
        old = self.executors.get(executor_id)
        validate_registration(body)
        if (
            old is not None
            and body.get("session") != old.session
            and self.liveness.state(executor_id) is not ExecutorState.DEAD
        ):
            raise PermissionDenied(f"executor id {executor_id!r} is taken by a live executor")
        if old is not None:
            self.subscriber.disconnect(old.addr)
            self._by_peer.pop(old.peer, None)
            self._by_addr.pop(old.addr, None)
        # Final reports the previous master may never have seen come first.
        for report in body.get("reports") or []:
            if isinstance(report, dict):
                self._apply_report(report, executor_id)
        running = [
            (str(t.get("job_id")), str(t.get("task_id")), int(t.get("attempt", 0)))
            for t in body.get("tasks") or []
            if isinstance(t, dict)
        ]
        stop, lost = self.jobs.reconcile(executor_id, running)
        if lost:
            log.info("%d tasks of %s did not survive; rescheduling", len(lost), executor_id)
        info = ExecutorInfo(
            executor_id,
            body["addr"],
            max(0, body["slots"]),
            str(body.get("host", "")),
            int(body.get("pid", 0) or 0),
            call.peer,
            int(body.get("worker_budget") or 0),
        )
        self.executors[executor_id] = info
        self.functions.set_resources(executor_id, body.get("resources"))
        self._by_peer[call.peer] = executor_id
        self._by_addr[info.addr] = executor_id
        self.liveness.add(executor_id, time.monotonic())
        self.subscriber.connect(info.addr)
        if self.store is not None:
            record = {"id": executor_id, "addr": info.addr, "slots": info.slots, "host": info.host}
            try:
                self.store.register_executor(record, EXECUTOR_SESSION_TTL)
            except ZdfError as exc:
                log.warning("could not record executor %s in discovery: %s", executor_id, exc)
        log.info("executor %s registered (%s, %d slots)", executor_id, info.addr, info.slots)
        for job_id, task_id in stop:
            self.channel.notify(
                P.CANCEL_TASK, {"job_id": job_id, "task_id": task_id}, peer=call.peer
            )
        self.endpoints.push_to(executor_id)
        self.reactor.call_later(0, self._schedule)
        return {
            "master": self.config.name,
            "epoch": self.epoch,
            "heartbeat_addr": self.config.public_heartbeat_addr,
            "keepalive_interval": self.config.keepalive_interval,
            "keepalive_ttl": self.config.keepalive_ttl,
            "session": info.session,
        }

    def on_deregister(self, call: Call) -> Any:
        """A graceful shutdown: the executor has stopped its tasks; they move at once."""
        executor_id = self._by_peer.get(call.peer or b"")
        if executor_id is None:
            return {"left": False}  # not registered here (a failover): nothing to move
        log.info("executor %s is shutting down", executor_id)
        self._apply_liveness(self.liveness.left(executor_id))
        return {"left": True}

    def on_worker_lost(self, call: Call) -> Any:
        body = P.fields(call.body, executor_id=str, worker=str)
        if self._by_peer.get(call.peer or b"") != body["executor_id"]:
            raise PermissionDenied(f"only executor {body['executor_id']!r} reports its workers")
        self.functions.worker_lost(body["executor_id"], body["worker"])
        return None

    def on_fn_hello(self, call: Call) -> Any:
        """A worker of a registered executor: it names the session the master gave that
        executor's registration (handed to its workers), so no other connection can pose
        as one of its workers and take clients' tasks."""
        body = P.fields(call.body, executor_id=str, worker=str)
        info = self.executors.get(body["executor_id"])
        if info is None or call.body.get("session") != info.session:
            raise PermissionDenied(f"not a worker of a registered executor {body['executor_id']!r}")
        return self.functions.on_hello(call)

    def _alive_slots(self) -> dict[str, int]:
        return {
            e: info.slots
            for e, info in self.executors.items()
            if self.liveness.state(e) is ExecutorState.ALIVE
        }

    def _alive_peers(self) -> dict[str, bytes]:
        return {
            e: info.peer
            for e, info in self.executors.items()
            if self.liveness.state(e) not in GONE_EXECUTOR_STATES
        }

    def on_executor_list(self, call: Call) -> Any:
        used = self.jobs.used_slots()
        return [
            {
                **info.to_dict(self.liveness.state(e), self.liveness.last_seen(e)),
                "used": used.get(e, 0),
            }
            for e, info in sorted(self.executors.items())
        ]

    # -- scheduling ---------------------------------------------------------
    def _schedule_soon(self) -> None:
        """One placement round after the reactor has read what is waiting: a burst of
        reports costs one round and one write, not one per report."""
        if self._schedule_due is None:
            self._schedule_due = self.reactor.call_later(0, self._schedule)

    def _schedule(self) -> None:
        """Place what can be placed; record the placements, then send them (write-ahead).

        A placement is durable before its task starts, so a new leader never
        hands out the same attempt number again."""
        if self._schedule_due is not None:
            self._schedule_due.cancel()
            self._schedule_due = None
        if not self.leading:
            return
        dispatches = self.jobs.place_pending(self._alive_slots())
        if not dispatches:
            return
        if self.batch is None:
            self.starts.send(dispatches)
            return
        ops, put_back = persist.take_dirty(self.jobs, sorted({d.job_id for d in dispatches}))

        def recorded(error: ZdfError | None) -> None:
            if error is None:
                self.starts.send(dispatches)
                return
            put_back()
            if isinstance(error, NotLeader):
                return
            log.warning("could not record placements (%s); retrying soon", error)
            self.jobs.unplace(dispatches)
            self.reactor.call_later(RETRY_SCHEDULE, self._schedule)

        self.batch.add(ops, recorded)

    def _start_standing(self, d: Dispatch) -> bool:
        """Whether a start not sent still stands: the same attempt, still placed there."""
        job = self.jobs.jobs.get(d.job_id)
        task = job.tasks.get(d.spec.task_id) if job is not None else None
        return (
            self.leading
            and task is not None
            and task.state is TaskState.SCHEDULED
            and task.executor == d.executor_id
            and task.attempt == d.attempt
            and d.executor_id in self.executors
        )

    def _start_refused(self, d: Dispatch, error: ZdfError) -> None:
        self._task_report(
            d.job_id, d.spec.task_id, d.attempt, TaskState.FAILED, {"error": str(error)}
        )

    def _task_report(
        self,
        job_id: str,
        task_id: str,
        attempt: int,
        state: TaskState,
        info: dict[str, Any],
        executor_id: str | None = None,
    ) -> None:
        job_rec = self.jobs.jobs.get(job_id)
        task_rec = job_rec.tasks.get(task_id) if job_rec is not None else None
        was_finished = task_rec is not None and task_rec.state is TaskState.FINISHED
        cancels = self.jobs.task_state(job_id, task_id, attempt, state, info, executor_id)
        finished = task_rec is not None and task_rec.state is TaskState.FINISHED
        if finished and not was_finished and job_rec is not None and job_rec.spec.gang:
            self.endpoints.announce_done(job_id, task_id, task_rec.attempt)  # type: ignore[union-attr]
        for executor, job, task in cancels:
            self._send_cancel(executor, job, task)
        job_rec = self.jobs.jobs.get(job_id)
        if job_rec is not None and job_rec.state in TERMINAL_JOB_STATES:
            self._job_done(job_rec)
        self._schedule_soon()

    def _send_cancel(self, executor_id: str, job_id: str, task_id: str) -> None:
        info = self.executors.get(executor_id)
        if info is not None:
            self.channel.notify(
                P.CANCEL_TASK, {"job_id": job_id, "task_id": task_id}, peer=info.peer
            )

    def on_task_state(self, call: Call) -> Any:
        executor_id = self._by_peer.get(call.peer or b"")
        if executor_id is None:
            # Not registered with this master (a failover): the executor sends it again
            # with its registration, so refuse rather than lose it.
            raise ZdfError("executor not registered with this master", retry=True)
        self._apply_report(call.body, executor_id)
        state, job_id = call.body.get("state"), call.body["job_id"]
        if call.is_event or self.batch is None or state not in FINAL_REPORTS:
            return None
        # A task's last word is acknowledged once its state is durable: acknowledged from
        # memory, a master killed before its next write forgot a finished task, and the
        # executor, whose report was acknowledged, never sent it again.
        ops, put_back = persist.take_dirty(self.jobs, [job_id])
        if not ops:
            return None

        def recorded(error: ZdfError | None) -> None:
            if error is None:
                call.reply(None)
                return
            put_back()
            call.fail(ZdfError(f"report not recorded yet: {error}", retry=True))

        self.batch.add(ops, recorded)
        return DEFER

    def _apply_report(self, body: Any, executor_id: str) -> None:
        body = P.fields(body, job_id=str, task_id=str, attempt=int, state=str)
        try:
            state = TaskState(body["state"])
        except ValueError:
            raise ProtocolError(f"unknown task state {body['state']!r}") from None
        info = body.get("info") if isinstance(body.get("info"), dict) else {}
        assert isinstance(info, dict)
        self._task_report(
            body["job_id"], body["task_id"], body["attempt"], state, info, executor_id
        )

    def on_checkpoint(self, call: Call) -> Any:
        """Store a task's state; only the current attempt on its own executor may write."""
        body = P.fields(call.body, job_id=str, task_id=str, attempt=int, state=bytes)
        executor_id = self._by_peer.get(call.peer or b"")
        if executor_id is None:
            # Not registered (yet) with this master, e.g. just after a failover: try later.
            raise ZdfError("executor not registered with this master", retry=True)

        def check() -> None:
            job = self.jobs.jobs.get(body["job_id"])
            task = job.tasks.get(body["task_id"]) if job else None
            if task is None or task.attempt != body["attempt"] or task.executor != executor_id:
                raise JobError(f"stale checkpoint from attempt {body['attempt']} refused")

        check()
        key = (body["job_id"], body["task_id"])
        if self.batch is None:
            self.checkpoints[key] = body["state"]
            return {"saved": True}

        def saved(error: ZdfError | None) -> None:
            if error is not None:
                call.fail(error)
                return
            self.checkpoints[key] = body["state"]
            call.reply({"saved": True})

        op = persist.checkpoint_op(body["job_id"], body["task_id"], body["state"])
        self.batch.add([op], saved, check)
        return DEFER

    def on_progress(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task_id=str, attempt=int, counters=dict)
        self.jobs.progress(body["job_id"], body["task_id"], body["attempt"], body["counters"])
        return None

    def on_publish_endpoint(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task_id=str, name=str, addr=str, attempt=int)
        job_id, task_id, name, addr = body["job_id"], body["task_id"], body["name"], body["addr"]
        attempt = body["attempt"]
        caller = self._by_peer.get(call.peer or b"")

        def check() -> None:
            if job_id not in self.jobs.jobs:
                raise JobError(f"no job {job_id!r}")
            task = self.jobs.jobs[job_id].tasks.get(task_id)
            if task is None or attempt != task.attempt or caller != task.executor:
                # A zombie's late publish must not redirect the task's peers to it.
                raise JobError(f"stale endpoint of {task_id} (attempt {attempt}) refused")

        def recorded(error: ZdfError | None) -> None:
            if error is not None:
                call.fail(error)
                return
            self.endpoints.record(job_id, task_id, name, addr)
            call.reply(None)

        check()
        if self.batch is None:
            recorded(None)
        else:
            self.batch.add([persist.endpoint_op(job_id, task_id, name, addr)], recorded, check)
        return DEFER

    # -- jobs ---------------------------------------------------------------
    def on_submit_job(self, call: Call) -> Any:
        body = P.fields(call.body, spec=dict)
        token = body.get("token") if isinstance(body.get("token"), str) else None
        parts = body.get("parts")
        if token is not None and token in self.jobs._tokens:  # a retry of a submission
            return self._accepted(self.jobs.jobs[self.jobs._tokens[token]])
        pieces = None
        if isinstance(parts, int) and parts > 0 and token is not None:
            staged = self.staging.take(token)  # the tasks came in parts, checked already
            spec = JobSpec.from_dict(body["spec"], staged.tasks(parts))
            check_job(body["spec"], spec, self.config.max_job_spec_bytes, self.config.max_job_tasks)
            # What the parts made already, rather than a pass over the whole job here.
            spec.__dict__["as_dict"] = {**spec.to_dict_header(), "tasks": staged.task_dicts(parts)}
            spec.__dict__["slots_needed"] = len(staged.slot_keys)
            self._check_worker_room(spec, staged.max_cost)
            pieces = staged.all_pieces(parts)
            job = self.jobs.submit(
                spec, token, self.batch is None, staged.job_id, staged.task_records(parts)
            )
        else:
            spec = JobSpec.from_dict(body["spec"])  # the whole job is valid before any is kept
            check_job(body["spec"], spec, self.config.max_job_spec_bytes, self.config.max_job_tasks)
            self._check_worker_room(spec)
            job = self.jobs.submit(spec, token, stored=self.batch is None)
        if self.batch is None:
            return self._accepted(job)
        try:  # may refuse a task too big to keep: nothing is kept then
            ops = persist.submission_ops(job, pieces, self.epoch)
        except JobError:
            self.jobs.forget(job.job_id)
            raise

        def stored(error: ZdfError | None) -> None:
            if error is not None:
                self.jobs.forget(job.job_id)
                call.fail(error)
                return
            job.stored = True
            if len(job.tasks) >= FREEZE_TASKS:
                _freeze_long_lived()
            call.reply(self._accepted(job))

        self.batch.add(ops, stored)  # durable before it is acknowledged (header last)
        return DEFER

    def on_submit_part(self, call: Call) -> Any:
        """A part of a large job's tasks (``zdf.master.staging``)."""
        body = P.fields(call.body, token=str, index=int, tasks=list)
        staged = self.staging.add_part(body["token"], body["index"], body["tasks"])
        _freeze_long_lived()  # the staged tasks live until the job does
        return {"staged": staged}

    def _check_worker_room(self, spec: JobSpec, max_cost: int | None = None) -> None:
        """Refuse at once a job with a task no worker process has the descriptors for
        (``zdf.jobs.cost``): it would fail as it starts, after its others had."""
        budgets = [
            info.worker_budget
            for e, info in self.executors.items()
            if info.worker_budget and self.liveness.state(e) is ExecutorState.ALIVE
        ]
        if not budgets:
            return
        if max_cost is not None and max_cost <= max(budgets):
            return
        biggest = max(spec.as_dict["tasks"], key=task_cost)
        if task_cost(biggest) > max(budgets):
            raise JobError(
                f"task {biggest['task_id']} needs about {task_cost(biggest)} file descriptors; "
                f"a worker process allows its tasks at most {max(budgets)} "
                "(executor key worker-sockets, or the process's descriptor limit)"
            )

    def _accepted(self, job: JobRecord) -> dict[str, Any]:
        log.info(
            "job %s (%s) submitted with %d tasks",
            job.job_id,
            job.spec.name,
            len(job.tasks),
            extra=task_fields(job.job_id),
        )
        self._schedule()
        if job.reason:
            log.info("job %s waits: %s", job.job_id, job.reason)
        return {"job_id": job.job_id, "state": job.state.value, "reason": job.reason}

    def _expire_unplaced(self) -> None:
        """Fail the jobs that waited longer than their ``placement-timeout`` to be placed."""
        if not self.leading:
            return
        for job in self.jobs.expired(time.monotonic()):
            log.warning("job %s failed: %s", job.job_id, job.reason)
            for executor, job_id, task_id in self.jobs.fail_unplaced(job):
                self._send_cancel(executor, job_id, task_id)
            self._job_done(job)

    def on_job_list(self, call: Call) -> Any:
        return [self._job_summary(job) for job in self.jobs.jobs.values()]

    def on_job_status(self, call: Call) -> Any:
        """A job and its tasks; ``offset``/``limit`` ask for a page of them (a job of
        100,000 tasks in one answer keeps the master busy for most of a second)."""
        body = P.fields(call.body, job_id=str)
        job = self.jobs.get(body["job_id"])
        offset, limit = body.get("offset"), body.get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            return job.to_dict()
        start = offset if isinstance(offset, int) and offset > 0 else 0
        doc = job.to_dict(tasks=False)
        doc["task_count"] = len(job.tasks)
        page = itertools.islice(job.tasks.values(), start, start + limit)
        doc["tasks"] = [t.to_dict() for t in page]
        return doc

    def on_job_cancel(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str)
        job = self.jobs.get(body["job_id"])
        cancels = self.jobs.cancel(job.job_id)

        def recorded(error: ZdfError | None) -> None:
            # Recorded before the executors are told, so that a deposed master is
            # refused here instead of stopping the new leader's tasks.
            if isinstance(error, NotLeader):
                call.fail(error)
                return
            if error is not None:
                put_back()
                log.warning("could not record the cancel of %s yet: %s", job.job_id, error)
            for executor, job_id, task_id in cancels:
                self._send_cancel(executor, job_id, task_id)
            self._job_done(job)
            call.reply(self._job_summary(job))

        if self.batch is None:
            recorded(None)
            return DEFER
        ops, put_back = persist.take_dirty(self.jobs, [job.job_id])
        self.batch.add(ops, recorded)
        return DEFER

    def on_wait_job(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str)
        job = self.jobs.get(body["job_id"])
        if job.state in TERMINAL_JOB_STATES:
            return job.to_dict()
        self._waiters.setdefault(job.job_id, []).append(call)
        return DEFER

    def _job_done(self, job: JobRecord) -> None:
        if job.state not in TERMINAL_JOB_STATES:
            return
        self.endpoints.forget(job.job_id)
        for key in [k for k in self.checkpoints if k[0] == job.job_id]:
            del self.checkpoints[key]
        if self.store is not None:
            try:
                self.store.drop_checkpoints(job.job_id)
            except LostLeadership as exc:
                self._step_down(str(exc))
                return
        for call in self._waiters.pop(job.job_id, []):
            call.reply(job.to_dict())
        log.info("job %s %s", job.job_id, job.state.value, extra=task_fields(job.job_id))

    @staticmethod
    def _job_summary(job: JobRecord) -> dict[str, Any]:
        counts = job.counts()
        return {
            "id": job.job_id,
            "name": job.spec.name,
            "type": job.spec.job_type,
            "state": job.state.value,
            "tasks": len(job.tasks),
            "running": counts.get("running", 0),
            "finished": counts.get("finished", 0),
            "reason": job.reason,
            "submitted_at": job.submitted_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "failed": counts.get("failed", 0),
        }

    def on_cluster_status(self, call: Call) -> Any:
        states = [self.liveness.state(e) for e in self.executors]
        jobs = [j.state.value for j in self.jobs.jobs.values()]
        return {
            "master": self.config.name,
            "addr": self.config.public_addr,
            "epoch": self.epoch,
            "role": "leader" if self.leading else "standby",
            "leader": None if self.leader is None else self.leader.addr,
            "uptime_s": round(time.time() - self.started, 1),
            "executors": {s.value: states.count(s) for s in ExecutorState},
            "slots": sum(
                i.slots
                for e, i in self.executors.items()
                if self.liveness.state(e) is ExecutorState.ALIVE
            ),
            "slots_used": sum(
                n
                for e, n in self.jobs.used_slots().items()
                if self.liveness.state(e) is ExecutorState.ALIVE
            ),
            "jobs": {s: jobs.count(s) for s in sorted(set(jobs))},
            "dropped": dict(self.channel.stats),
            "functions": self.functions.status(),
        }

    def _sweep_jobs(self) -> None:
        if not self.leading:
            return
        try:
            self.retention.sweep()
        except LostLeadership as exc:
            self._step_down(str(exc))

    def _persist(self) -> None:
        if not self.leading or self.batch is None:
            return
        if not (self.jobs.dirty or self.jobs.dirty_tasks):
            return
        ops, put_back = persist.take_dirty(self.jobs)
        if not ops:
            return

        def written(error: ZdfError | None) -> None:
            if error is not None:
                put_back()

        self.batch.add(ops, written)


def _freeze_long_lived() -> None:
    """Move what exists now out of the garbage collector's sight (``gc.freeze``).

    A big job's records live as long as the master; left in the collector's
    oldest generation, every full collection walks them all: over a second for
    100,000 tasks, long enough to lose the election lease. Frozen objects are
    still freed when their last reference goes; only a reference cycle among
    them would stay (the job records have none)."""
    gc.freeze()
