"""The executor process: registers with the master and runs tasks in its workers.

Theory of operation: one reactor with three kinds of traffic.

* A DEALER channel to the master: ``register`` on start (retried with backoff
  until a master answers), ``start_task``/``cancel_task``/``endpoints`` from the
  master, and task reports (``task_state``, ``progress``, ``publish_endpoint``)
  forwarded to it.
* Heartbeats: a PUB at ``worker-addr`` that the master subscribes to, and a SUB
  to the master's PUB. When the master falls silent for ``keepalive-ttl`` the
  executor registers again (a restarted or new master), with its running tasks.
* A control ROUTER over ipc:// that the worker processes connect to.

Cut off: when no master at all has answered for ``keepalive-ttl`` (no heartbeat,
no reply, and no sign of life -- a ping's answer or a ZeroMQ handshake -- from a
probe of every known master after half the TTL: ``zdf.executor.probe``), this
executor is on the wrong side of a partition, and the master has declared it dead
and started its tasks elsewhere by now. It stops its tasks then, by itself, so that nothing it runs
goes on writing (or holds a sink's file) beside the replacements; it keeps
registering and rejoins empty when the network heals. A master failover does
not trip this: standbys answer while the new leader is elected.

Addresses: the heartbeat PUB binds ``worker-addr``; the master dials
``advertise-addr`` (``zdf.wire.addresses``). Data pipes bind on worker-addr's host
and are published with the advertised host; they use ipc:// only when that host
is loopback (a cluster on one machine), else tcp:// with an ipc:// twin in this
executor's private socket directory, which the workers of this host dial instead
(``same-host-ipc``; ``zdf.runtime.hubaddr``). Given no ``join``, the
masters are found in the metastore's discovery records (``zdf.discovery``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from zdf import protocol as P
from zdf.config import ExecutorConfig
from zdf.discovery import find_masters
from zdf.errors import JobError, NotLeader, ProtocolError, StaleEpoch, Timeout, ZdfError
from zdf.executor import sockdir
from zdf.executor.pool import WorkerPool, WorkerSlot
from zdf.executor.probe import MasterProbe
from zdf.executor.spill import resolve_memory_limit
from zdf.files import private_dir
from zdf.jobs.cost import task_cost
from zdf.master.heartbeats import HeartbeatPublisher, HeartbeatSubscriber
from zdf.observe.taskout import read_logs
from zdf.wire.addresses import host_of, is_loopback
from zdf.wire.batchcall import CallBatcher, serve_batch
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import DEFER, Call, Channel
from zdf.wire.security import MASTERS
from zdf.wire.sockets import make_socket

log = logging.getLogger(__name__)

REGISTER_BACKOFF_MIN = 0.05
REGISTER_BACKOFF_MAX = 2.0
REAP_INTERVAL = 0.05
RELAY_TIMEOUT = 5.0
REPORT_TIMEOUT = 2.0
DEREGISTER_TIMEOUT = 1.0


@dataclass
class RunningTask:
    job_id: str
    task_id: str
    attempt: int
    worker: str
    kind: str
    group: str = ""


class Executor:
    def __init__(self, config: ExecutorConfig, reactor: Reactor | None = None) -> None:
        self.config = config
        self.reactor = reactor or Reactor()
        self.executor_id = config.executor_id
        self.host = host_of(config.worker_addr) or "127.0.0.1"
        self.public_host = host_of(config.public_addr) or self.host
        run_dir = os.path.join(config.data_dir, self.executor_id)
        private_dir(config.data_dir)
        private_dir(run_dir)
        # Data sockets on a tmpfs when there is one (zdf.executor.sockdir).
        self.ipc_dir, self._own_ipc_dir = sockdir.data_socket_dir(run_dir)
        self.logs_dir = os.path.join(run_dir, "logs")  # kept on disk, past this process
        # Workers' results beyond memory-limit, on disk (not the tmpfs of the sockets).
        self.spill_dir = os.path.join(run_dir, "spill")
        ctl_addr = f"ipc://{run_dir}/ctl-{os.getpid()}.sock"
        self.tasks: dict[tuple[str, str], RunningTask] = {}
        self.master_epoch: int | None = None
        self.registered = False
        self._session = ""  # the master's proof that a registration or heartbeat is ours
        self._backoff = REGISTER_BACKOFF_MIN
        self._last_master_beat = time.monotonic()
        self._last_master_contact = time.monotonic()  # any master, any answer
        self.probe = MasterProbe(self.reactor, self._heard_a_master)
        self._last_check = time.monotonic()
        self._register_timer: Timer | None = None
        self._backlog: list[Any] = []
        self._master_hb = ""
        # Endpoint publications not yet recorded by a master, by (job, task, name): a
        # done flag lost with a dying master would stop its job for good.
        self._publishing: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._unacked: dict[
            tuple[str, str, int], dict[str, Any]
        ] = {}  # start_task bodies waiting for a ready worker

        self.ctl = Channel(
            self.reactor,
            # No high-water mark (ZeroMQ's default, 1,000, drops what a ROUTER sends to a
            # busy peer beyond it, silently): a 1,000-table job sends a worker a start
            # and an endpoint update per task, then a done flag per task, in bursts, and
            # a lost done flag leaves the tasks waiting on it running for ever.
            make_socket(zmq.ROUTER, bind=ctl_addr, sndhwm=0, rcvhwm=0),
            {
                "ready": self.on_worker_ready,
                P.TASK_STATE: self.on_worker_task_state,
                P.PROGRESS: self._forward,
                P.PUBLISH_ENDPOINT: self._publish,
                P.CHECKPOINT: self._relay,
                P.BATCH: serve_batch,  # a worker's reports of one turn (zdf.wire.batchcall)
            },
            name="executor-ctl",
        )
        handlers: dict[str, Callable[[Call], Any]] = {
            P.START_TASK: self.on_start_task,
            P.START_TASKS: self.on_start_tasks,
            P.CANCEL_TASK: self.on_cancel_task,
            P.ENDPOINTS: self.on_endpoints,
            P.PING: lambda call: {"executor": self.executor_id},
            P.TASK_LOGS: self.on_task_logs,
        }
        self.masters = list(config.join) or self._discover()
        self.master_addr = self.masters[0]
        self.registrations = 0  # successful registrations: workers say hello after each
        workers_n = config.workers or os.cpu_count() or 1
        # What function tasks may ask of this executor (zdf.master.fnplacement).
        self.resources = {"cpu": workers_n, **config.resources}
        self.master = self._connect_master(handlers)
        # Reports, progress and publications to the master, a turn's in one message.
        self.to_master = CallBatcher(self.reactor, lambda: self.master)
        self.publisher = HeartbeatPublisher(config.worker_addr, self.executor_id, 0, allow=MASTERS)
        self.master_sub = HeartbeatSubscriber(
            self.reactor, self._on_master_beat, server_role="master"
        )
        workers = config.workers or os.cpu_count() or 1
        self.pool = WorkerPool(
            workers,
            ctl_addr,
            self.host,
            self.ipc_dir if is_loopback(self.public_host) else "",  # ipc:// on one machine only
            config.log_level,
            self._on_worker_exit,
            executor_id=self.executor_id,
            frozen_limit=config.keepalive_ttl,
            allow_pickle=config.allow_pickle,
            sockets=config.worker_sockets,
            log_format=config.log_format,
            log_file=config.log_file,
            public_host=self.public_host,
            logs_dir=self.logs_dir,
            memory_limit=resolve_memory_limit(config.memory_limit, workers),
            spill_dir=self.spill_dir,
            # On hosts: tcp:// data sockets with ipc:// twins for this host's peers.
            same_host_dir=""
            if is_loopback(self.public_host) or not config.same_host_ipc
            else self.ipc_dir,
        )
        self._handlers = handlers
        self.reactor.call_every(config.keepalive_interval, self._beat, now=True)
        self.reactor.call_every(REAP_INTERVAL, self.pool.reap)
        self.reactor.call_every(config.keepalive_interval, self._check_master)

    def _connect_master(self, handlers: dict[str, Callable[[Call], Any]]) -> Channel:
        # Unbounded: the master's endpoint updates come in bursts of one per task.
        sock = make_socket(zmq.DEALER, connect=self.master_addr, server_role="master", rcvhwm=0)
        return Channel(self.reactor, sock, handlers, name="executor")

    def _discover(self) -> list[str]:
        """The masters' addresses from the metastore (at start, until some are found)."""
        deadline = time.monotonic() + self.config.session_ttl
        while True:
            try:
                found = find_masters(self.config.meta_endpoints)
                log.info("found masters in the metastore: %s", ",".join(found))
                return found
            except ZdfError as exc:
                if time.monotonic() > deadline:
                    raise ZdfError(f"no master to join: {exc}") from None
                log.info("waiting for a master in the metastore: %s", exc)
                time.sleep(REGISTER_BACKOFF_MAX / 4)  # bounded by the deadline above

    def _switch_master(self, hint: str | None) -> None:
        """Talk to another master: the leader's address when a standby named it, else the next."""
        if hint is None and not self.config.join:
            self._rediscover()
        if hint and hint not in self.masters:
            self.masters.append(hint)
        if hint:
            target = hint
        else:
            target = self.masters[(self.masters.index(self.master_addr) + 1) % len(self.masters)]
        if target == self.master_addr and hint is None and len(self.masters) == 1:
            return
        log.info("switching master connection %s -> %s", self.master_addr, target)
        self.master.close()
        self.master_addr = target
        self.master = self._connect_master(self._handlers)

    def _rediscover(self) -> None:
        try:
            found = find_masters(self.config.meta_endpoints, timeout=0.5)
        except ZdfError as exc:
            log.info("masters not found in the metastore now: %s", exc)
            return
        self.masters += [addr for addr in found if addr not in self.masters]

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Start the workers; registration follows once every one of them is ready."""
        self.pool.start()

    def run(self) -> None:
        self.start()
        log.info(
            "executor %s at %s (dialed at %s)",
            self.executor_id,
            self.config.worker_addr,
            self.config.public_addr,
        )
        self.reactor.run()

    def close(self) -> None:
        self.pool.stop()
        self.to_master.flush()
        self.leave()
        self.master.close()
        self.ctl.close()
        self.publisher.close()
        self.master_sub.close()
        self.probe.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)  # a killed worker's files too
        if self._own_ipc_dir:
            sockdir.remove(self.ipc_dir)
        sockdir.sweep(sockdir.TMPFS)  # shared-memory files of workers killed (shmhandoff)

    def leave(self, timeout: float = DEREGISTER_TIMEOUT) -> None:
        """Tell the master this executor is going (its tasks are stopped): it is listed
        ``left``, not ``dead``, and its tasks run elsewhere at once, without waiting for
        its silence to run out. Bounded by ``timeout``; a master away misses nothing
        that liveness would not find."""
        if not self.registered:
            return
        answered: list[ZdfError | None] = []
        self.master.request(
            P.DEREGISTER,
            {"executor_id": self.executor_id},
            timeout=timeout,
            callback=lambda result, error: answered.append(error),
        )
        self.reactor.run(until=lambda: bool(answered), deadline=time.monotonic() + timeout)
        self.registered = False

    # -- master link --------------------------------------------------------
    def _register(self) -> None:
        self._register_timer = None
        body = {
            "executor_id": self.executor_id,
            "addr": self.config.public_addr,
            "slots": self.config.slots,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "worker_budget": self.pool.budget(),
            "tasks": [vars(t) for t in self.tasks.values()],
            "resources": self.resources,
            "reports": list(self._unacked.values()),
            "session": self._session,
        }
        self.master.request(
            P.REGISTER, body, timeout=max(0.5, self._backoff * 4), callback=self._on_registered
        )

    def _on_registered(self, result: Any, error: ZdfError | None) -> None:
        if error is None or isinstance(error, NotLeader):
            self._heard_a_master()  # a master answered, if only "not the leader"
        if error is not None or not isinstance(result, dict):
            log.info("registration not answered (%s); retrying", error)
            if isinstance(error, NotLeader):
                hint = error.data.get("leader")
                self._switch_master(hint if isinstance(hint, str) else None)
            elif isinstance(error, Timeout) and len(self.masters) > 1:
                self._switch_master(None)
            elif isinstance(error, Timeout):
                # A fresh socket: the unanswered registrations queued for a master that
                # is away would all reach it when it is back (one executor registering
                # a dozen times in half a second after a restart).
                self.master.close()
                self.master = self._connect_master(self._handlers)
            self._backoff = min(REGISTER_BACKOFF_MAX, self._backoff * 2)
            if self._register_timer is None:
                self._register_timer = self.reactor.call_later(self._backoff, self._register)
            return
        self._backoff = REGISTER_BACKOFF_MIN
        self.registered = True
        self.registrations += 1
        self._session = str(result.get("session") or "")
        self.master_epoch = int(result.get("epoch", 0))
        self._last_master_beat = time.monotonic()
        heartbeat_addr = result.get("heartbeat_addr")
        if isinstance(heartbeat_addr, str) and heartbeat_addr != self._master_hb:
            if self._master_hb:
                self.master_sub.disconnect(self._master_hb)
            self._master_hb = heartbeat_addr
            self.master_sub.connect(heartbeat_addr)
        log.info("registered with master %s (epoch %s)", result.get("master"), self.master_epoch)
        for key, publication in list(self._publishing.items()):
            self._send_publication(key, publication)
        for slot in self.pool.slots.values():
            self.ctl.notify(P.LEADER, self._leader(), peer=slot.identity)

    def _leader(self) -> dict[str, Any]:
        """Where workers take function tasks from. ``registration`` changes each time this
        executor registers (a restarted or new master has forgotten its workers): the
        workers then say hello to the master again, even at the same address. ``session``
        is what the master gave this registration: a worker's hello names it, which proves
        to the master that the worker is this executor's."""
        return {
            "addr": self.master_addr,
            "registration": self.registrations,
            "session": self._session,
        }

    def _on_master_beat(self, body: dict[str, Any]) -> None:
        self._last_master_beat = time.monotonic()
        self._heard_a_master()
        epoch = body.get("epoch")
        if self.registered and isinstance(epoch, int) and epoch != self.master_epoch:
            log.info("a new master (epoch %s): registering again", epoch)
            self.registered = False
            self._register()

    def _check_master(self) -> None:
        now = time.monotonic()
        silent = now - self._last_master_beat
        frozen = now - self._last_check
        self._last_check = now
        unheard = now - self._last_master_contact
        cut_off = unheard > self.config.keepalive_ttl and self.probe.unanswered
        if cut_off and (self.tasks or self._backlog):
            self._stop_all_tasks(unheard)
        if unheard > self.config.keepalive_ttl / 2:  # (a new round forgets the last)
            self.probe.start(self.masters, self.config.keepalive_ttl / 2)
        if not self.registered:
            return
        if frozen > self.config.keepalive_ttl:
            # This process did not run for a whole TTL (SIGSTOP, a VM pause): the master
            # has declared it dead meanwhile, even if its old heartbeats sit in our queue.
            log.warning("executor was frozen for %.1fs: registering again", frozen)
        elif silent > self.config.keepalive_ttl:
            log.warning("master silent for %.1fs: registering again", silent)
        else:
            return
        self.registered = False
        self._last_master_beat = now
        self._register()

    def _heard_a_master(self) -> None:
        self._last_master_contact = time.monotonic()
        self.probe.reset()

    def _stop_all_tasks(self, silent: float) -> None:
        """Cut off from every master: the tasks run elsewhere by now (see the docstring)."""
        log.warning(
            "no master answered for %.1fs: stopping %d tasks (they run elsewhere now)",
            silent,
            len(self.tasks) + len(self._backlog),
        )
        self._backlog.clear()
        for running in list(self.tasks.values()):
            self._cancel_on_worker(running)
        self.tasks.clear()

    def _beat(self) -> None:
        self.publisher.beat({"tasks": len(self.tasks), "session": self._session})

    # -- tasks --------------------------------------------------------------
    def on_start_task(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task=dict, attempt=int)
        key = (body["job_id"], str(body["task"].get("task_id")))
        old = self.tasks.pop(key, None)
        if old is not None:
            self._cancel_on_worker(old)
        self._backlog = [b for b in self._backlog if _task_key(b) != key]
        if not self._place(body):  # JobError: no worker has room for its sockets
            self._backlog.append(body)  # started when a worker is ready or idle
            return {"worker": None, "queued": True}
        return {"worker": self.tasks[key].worker}

    def on_start_tasks(self, call: Call) -> Any:
        """A placement round's starts (``zdf.master.starts``): read whole, refused whole
        when malformed or from a master of another epoch, then each started as
        ``start_task`` would; each worker is sent its share in one message."""
        body = P.fields(call.body, epoch=int, starts=list)
        starts: list[dict[str, Any]] = body["starts"]
        endpoints = body.get("endpoints") or {}
        if not isinstance(endpoints, dict) or not all(
            isinstance(e, list) for e in endpoints.values()
        ):
            raise ProtocolError("field 'endpoints' is not a map of lists")
        for start in starts:
            P.fields(start, job_id=str, task=dict, attempt=int)
            if not isinstance(start["task"].get("task_id"), str):
                raise ProtocolError("a start's task has no task_id")
        if self.master_epoch is not None and body["epoch"] != self.master_epoch:
            raise StaleEpoch(
                f"start commands of epoch {body['epoch']} refused: "
                f"{self.executor_id} follows the master of epoch {self.master_epoch}"
            )
        keys = {_task_key(start) for start in starts}
        self._backlog = [b for b in self._backlog if _task_key(b) not in keys]
        shares: dict[bytes, list[dict[str, Any]]] = {}
        results: list[dict[str, Any]] = []
        for start in starts:
            key = _task_key(start)
            old = self.tasks.pop(key, None)
            if old is not None:
                self._cancel_on_worker(old)
            try:
                placed = self._place(start, shares)
            except JobError as exc:
                results.append({"error": str(exc)})
                continue
            if placed:
                results.append({"worker": self.tasks[key].worker})
            else:  # its job's endpoints go with it when it leaves the backlog
                start["endpoints"] = endpoints.get(start["job_id"])
                self._backlog.append(start)
                results.append({"worker": None, "queued": True})
        for identity, share in shares.items():
            jobs = dict.fromkeys(start["job_id"] for start in share)
            update = {"endpoints": {j: endpoints[j] for j in jobs if j in endpoints}}
            self.ctl.notify(P.START_TASKS, {**update, "starts": share}, peer=identity)
        return {"results": results}

    def _place(
        self, body: dict[str, Any], shares: dict[bytes, list[dict[str, Any]]] | None = None
    ) -> bool:
        """Hand a task to a worker: a function needs an idle one, an operator the least
        loaded, or the one its placement group is on (``TaskSpec.group``)."""
        key = _task_key(body)
        kind = str(body["task"].get("kind"))
        group = str(body["task"].get("group") or "")
        home = None
        if group:
            home = next(
                (t.worker for t in self.tasks.values() if t.group == group and t.job_id == key[0]),
                None,
            )
        cost = task_cost(body["task"])
        slot = self.pool.least_loaded(function=kind == "function", prefer=home, cost=cost)
        if slot is None:
            if self.pool.least_loaded(function=kind == "function", prefer=home) is not None:
                room = max((s.room() for s in self.pool.slots.values() if s.ready), default=0)
                raise JobError(
                    f"task {key[1]} refused by {self.executor_id}: it needs about {cost} "
                    f"file descriptors and its worker processes have at most {room} to spare"
                )
            return False
        self.tasks[key] = RunningTask(key[0], key[1], body["attempt"], slot.name, kind, group)
        slot.add_task(key, cost)
        if kind == "function":
            slot.functions += 1
        if shares is not None:
            shares.setdefault(slot.identity, []).append(body)
        else:
            self.ctl.notify(P.START_TASK, body, peer=slot.identity)
        return True

    def _drain_backlog(self) -> None:
        backlog, self._backlog = self._backlog, []
        for i, body in enumerate(backlog):
            try:
                placed = self._place(body)
            except JobError as exc:
                self._report_final(
                    {
                        "job_id": str(body["job_id"]),
                        "task_id": _task_key(body)[1],
                        "attempt": body["attempt"],
                        "state": "failed",
                        "info": {"error": str(exc)},
                    }
                )
                continue
            if not placed:
                self._backlog = backlog[i:] + self._backlog
                return

    def on_cancel_task(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task_id=str)
        key = (body["job_id"], body["task_id"])
        self._backlog = [b for b in self._backlog if _task_key(b) != key]
        running = self.tasks.pop(key, None)
        if running is not None:
            self._cancel_on_worker(running)
        return None

    def _cancel_on_worker(self, running: RunningTask) -> None:
        slot = self.pool.slots.get(running.worker)
        if slot is None:
            return
        key = (running.job_id, running.task_id)
        slot.drop_task(key)
        if running.kind == "function":
            # A function cannot be interrupted from outside its process: replace the worker.
            slot.functions = max(0, slot.functions - 1)
            self.pool.restart(slot)
            return
        self.ctl.notify(
            P.CANCEL_TASK,
            {"job_id": running.job_id, "task_id": running.task_id},
            peer=slot.identity,
        )

    def on_task_logs(self, call: Call) -> Any:
        """The output files this executor's workers kept for a job (``zdf.observe.taskout``)."""
        body = P.fields(call.body, job_id=str, offsets=dict, limit=int)
        return read_logs(
            self.logs_dir,
            body["job_id"],
            body.get("task_id"),
            body.get("attempt"),
            {str(k): int(v) for k, v in body["offsets"].items()},
            body["limit"],
        )

    def on_endpoints(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, endpoints=list)
        for slot in self.pool.slots.values():
            if body["job_id"] in slot.jobs:
                self.ctl.notify(P.ENDPOINTS, body, peer=slot.identity)
        return None

    # -- workers ------------------------------------------------------------
    def on_worker_ready(self, call: Call) -> Any:
        name = call.peer.decode() if call.peer else ""
        budget = call.body.get("budget") if isinstance(call.body, dict) else None
        slot = self.pool.mark_ready(name, budget if isinstance(budget, int) else 0)
        if slot is None:
            return None
        log.debug("worker %s ready", name)
        if self.registered:
            self.ctl.notify(P.LEADER, self._leader(), peer=slot.identity)
        if not self.registered and self._register_timer is None and self.pool.all_ready():
            self._register()
        self._drain_backlog()
        return None

    def on_worker_task_state(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task_id=str, attempt=int, state=str)
        key = (body["job_id"], body["task_id"])
        running = self.tasks.get(key)
        if running is None or running.attempt != body["attempt"]:
            return None  # a report from a task we already canceled or replaced
        if body["state"] in ("finished", "failed", "canceled"):
            self.tasks.pop(key, None)
            slot = self.pool.slots.get(running.worker)
            if slot is not None:
                slot.drop_task(key)
                if running.kind == "function":
                    slot.functions = max(0, slot.functions - 1)
            self._report_final(body)
            self._drain_backlog()
            return None
        self.to_master.notify(P.TASK_STATE, body)
        return None

    def _report_final(self, body: dict[str, Any]) -> None:
        """A task's last word must reach a master: kept until acknowledged, and sent
        again with the next registration (a master failover can swallow it)."""
        key = (body["job_id"], body["task_id"], body["attempt"])
        self._unacked[key] = body

        def acked(result: Any, error: ZdfError | None) -> None:
            # Kept on a timeout or a "not registered" refusal: re-sent on registration.
            if error is None or not (isinstance(error, Timeout) or error.data.get("retry")):
                self._unacked.pop(key, None)

        self.to_master.request(P.TASK_STATE, body, timeout=REPORT_TIMEOUT, callback=acked)

    def _relay(self, call: Call) -> Any:
        """Forward a worker's request to the master and its answer back."""

        def answer(result: Any, error: ZdfError | None) -> None:
            if error is not None:
                call.fail(error)
            else:
                call.reply(result)

        self.master.request(call.op, call.body, timeout=RELAY_TIMEOUT, callback=answer)
        return DEFER

    def _publish(self, call: Call) -> Any:
        """A task's endpoint: kept until a master has recorded it (see ``_publishing``)."""
        body = call.body
        if not isinstance(body, dict):
            return None
        key = (str(body.get("job_id")), str(body.get("task_id")), str(body.get("name")))
        self._publishing[key] = body
        self._send_publication(key, body)
        return None

    def _send_publication(self, key: tuple[str, str, str], body: dict[str, Any]) -> None:
        def recorded(result: Any, error: ZdfError | None) -> None:
            if self._publishing.get(key) is not body:
                return  # a newer publication replaced it
            if error is None or isinstance(error, JobError):  # recorded, or refused for good
                del self._publishing[key]
            # Otherwise (no answer, not the leader) it is sent again at the next registration.

        self.to_master.request(P.PUBLISH_ENDPOINT, body, timeout=RELAY_TIMEOUT, callback=recorded)

    def _forward(self, call: Call) -> Any:
        if call.frames:
            self.master.notify(call.op, call.body, frames=call.frames)
        else:
            self.to_master.notify(call.op, call.body)
        return None

    def _on_worker_exit(self, slot: WorkerSlot, code: int) -> None:
        self.master.notify(P.WORKER_LOST, {"executor_id": self.executor_id, "worker": slot.name})
        for key in list(slot.tasks):
            running = self.tasks.pop(key, None)
            if running is None:
                continue
            self._report_final(
                {
                    "job_id": running.job_id,
                    "task_id": running.task_id,
                    "attempt": running.attempt,
                    "state": "failed",
                    "info": {"error": f"worker process exited with code {code}"},
                }
            )


def _task_key(body: dict[str, Any]) -> tuple[str, str]:
    return str(body["job_id"]), str(body["task"].get("task_id"))
