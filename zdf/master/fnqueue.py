"""Short function tasks: one queue in the master, placed so that no worker idles.

Theory of operation. A client says ``fn_client`` once (the answer tells it
whether pickled functions are accepted), then sends ``fn_submit`` batches; each
task is a client task id, a function path, a retry budget and its argument
frames, which the master forwards without unpacking. A batch may name the
client's result address (``reply``). Worker processes connect a DEALER straight
to the master and say ``fn_hello``; from then on the master sends each worker tasks in batches
(``fn_run``) as placement allows (``zdf.master.fnplacement``): a task of
unknown duration only to a worker with nothing in flight, short tasks a few
milliseconds' worth ahead (never more than ``window``), a burst shared out over
every worker. Tasks are queued by ``priority`` (higher first), then in order of
arrival; a task asks for ``resources`` and goes only where they are free.

Work stealing. When a worker is idle, nothing queued fits it, and another
worker has had tasks waiting behind its current one for longer than their
estimates promised, the master asks that worker for its tasks not started yet
(``fn_steal``); it answers with the keys it gave up (``fn_stolen``), which go
back in the queue at their old place. A worker checks for such a request
between tasks (a task runs in its reactor), so what it gives back is whatever
has not begun when its current task ends. The same request withdraws one task
for ``Future.cancel``: ``fn_cancel`` (a request) is answered once the worker
said whether it had started it.

Results take the short way: a worker sends them straight to the client's
result address and tells the master only which tasks are done (``fn_done``
entries without frames), which frees their window slots. A task whose client
gave no address has its result in ``fn_done``, and the master regroups those
per client (``fn_result``). Nothing is written to the metastore per task.

A worker or executor that dies has its in-flight tasks put back at the head of
the queue while their retry budget lasts, else answered with a ``WorkerLost``
error. A task can thus run twice (its first worker may have answered the client
just before dying); the client keeps the first answer per task id and drops any
other, so each client task gets exactly one answer. Canceling a queued task
removes it; a task on a worker is withdrawn if it has not started (see above),
else it runs and ``fn_cancel`` answers that it was not canceled. The first task
a worker has is taken as started without asking (it is running, or will be as
soon as the worker reads it): canceling a running task costs no wait for it.

A client running one task at a time may lease a worker and send such tasks
to it directly (``zdf.master.fnleases``); those reach the master only as a
count in ``fn_done``.

Task graphs: a task with inputs (``deps``) waits in ``zdf.master.fndeps`` until
they are ready, and that module keeps the record of every result a client may
still use (where it is, its size, its lineage). A task without inputs costs it
one record per result, kept until the client releases the future.

Pickled functions (``fn`` = ``P.PICKLED_FN``, the cloudpickle bytes as the task's
first frame) are refused with a ``PermissionError`` result unless the master's
``allow-pickle`` is set.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zdf import protocol as P
from zdf.errors import LimitExceeded, ProtocolError, worker_lost
from zdf.master import fnplacement as place
from zdf.master.fndeps import Dependencies
from zdf.master.fnleases import Leases
from zdf.master.fnorder import TaskOrder
from zdf.master.fnsessions import DEFAULT_GRACE, ClientSessions
from zdf.master.limits import DEFAULT_MAX_QUEUED_PER_CLIENT, TasksByClient
from zdf.wire.bigmsg import DEFAULT_MAX_VALUE_BYTES, split_batch
from zdf.wire.payload import pack
from zdf.wire.reactor import Timer
from zdf.wire.rpc import DEFER, Call, Channel

log = logging.getLogger(__name__)

PICKLE_REFUSED = {
    "type": "PermissionError",
    "module": "builtins",
    "message": "this cluster does not accept pickled functions (the master's allow-pickle is "
    "false); name the function by import path, or see the README on allow-pickle",
    "traceback": "",
}

DEFAULT_WINDOW = 64
MAX_BATCH = 256
MAX_SKIP = 64  # queued tasks waiting for resources that others may pass in one pump
UNSENT_RETRY = 0.2
"""Seconds before messages the master's ROUTER refused (``zdf.master.router``) go again:
tasks go back to the queue, results are sent again (``RESULT_TRIES`` times at most)."""
RESULT_TRIES = 50
STEAL_SLACK = place.FEED_SECONDS  # how late on its estimates a worker is before a steal


@dataclass(slots=True, eq=False)  # compared by identity
class FnTask:
    key: int
    client: bytes
    tid: int
    fn: str
    retries: int
    frames: list[Any]
    reply: str = ""  # the client's result address ("": results come back through the master)
    worker: bytes | None = None
    priority: int = 0
    demand: place.Resources | None = None  # None: one cpu
    name: str = ""  # what durations are learnt under ("": the function path)
    estimate: float | None = None  # what placement counted for it on its worker
    sent: int = 0  # when it was sent to its worker (a worker runs its tasks in this order)
    # task graphs (zdf.master.fndeps): the task as an input of others, and its own inputs
    inputs: list[FnTask] | None = None  # records of its inputs, in order
    missing: int = 0  # inputs not ready yet
    state: str = ""  # fndeps: pending, ready, failed or lost ("": no graph concerns it)
    holders: list[bytes] = field(default_factory=list)  # workers that keep its value
    nbytes: int = 0  # its value's size, as packed
    error: list[Any] | None = None  # its error's frames, if it failed
    waiters: list[FnTask] | None = None  # tasks waiting for it
    refs: int = 0  # pending tasks that take it as an input
    released: bool = False  # its client no longer holds the future
    skey: Any = None  # its store key on the holders (None: ``key``)

    @property
    def kind(self) -> str:
        return self.name or self.fn


@dataclass
class FnWorker:
    peer: bytes
    executor_id: str
    name: str
    direct: str = ""  # where it takes tasks under a lease ("": it does not)
    inflight: set[int] = field(default_factory=set)
    demands: dict[int, place.Resources] = field(default_factory=dict)  # non-default only
    load: float = 0.0  # estimated seconds of the known tasks in flight
    unknown: int = 0  # tasks in flight whose duration is not known yet
    since: float = 0.0  # when it last reported progress or got work while idle
    stealing: bool = False  # a steal request is on its way to it
    done: int = 0
    store: str = ""  # its object store's port (zdf.executor.objtransfer)
    over_limit: bool = False  # its store is over its memory limit: placed on last
    stored: int = 0  # bytes scattered to it (spreads scatters)


@dataclass
class PendingCancel:
    call: Call
    peers: set[bytes]  # workers asked to withdraw a task, not answered yet
    canceled: list[int]


class FunctionQueue:
    def __init__(
        self,
        channel: Channel,
        window: int = DEFAULT_WINDOW,
        executor_alive: Callable[[str], bool] | None = None,
        allow_pickle: bool = False,
        max_per_client: int = DEFAULT_MAX_QUEUED_PER_CLIENT,
        client_grace: float = DEFAULT_GRACE,
    ) -> None:
        self.channel = channel
        self.window = window
        self.allow_pickle = allow_pickle
        self.executor_alive = executor_alive or (lambda _id: True)
        self.queue: TaskOrder[FnTask] = TaskOrder()
        self.inflight: dict[int, FnTask] = {}
        self.workers: dict[bytes, FnWorker] = {}
        self.by_client: TasksByClient[FnTask] = TasksByClient()
        self.max_per_client = max_per_client
        self.resources: dict[str, place.Resources] = {}  # what executors advertise
        self.durations = place.Durations()
        self.clock: Callable[[], float] = time.monotonic
        self._keys = itertools.count(1)
        self._refs = itertools.count(1)
        self._sends = itertools.count(1)
        self._cancels: dict[int, PendingCancel] = {}
        self._steal_timer: Timer | None = None
        # Submissions and reports read together are placed together, once the channel
        # has read what was waiting (fuller batches, one pass): see ``_pump_soon``.
        self._dirty = False
        self._deferred = hasattr(channel, "on_drained")
        if self._deferred:
            channel.on_drained = self._on_drained
        self.leases = Leases(channel)
        self.deps = Dependencies(self)
        self.sessions = ClientSessions(self, client_grace)  # results of clients gone
        self.stats = {
            "submitted": 0,
            "completed": 0,
            "failed": 0,  # of the completed: the function raised (counted for metrics)
            "direct": 0,  # of the completed: sent to a leased worker, not through the queue
            "retried": 0,
            "lost": 0,
            "canceled": 0,
            "stolen": 0,  # given back by a busy worker for an idle one
            "infeasible": 0,
            "over_limit": 0,  # refused: the client had max-queued-fn-per-client queued
            "run_unsent": 0,  # refused by the ROUTER (zdf.master.router): queued again
            "results_resent": 0,
            "results_lost": 0,  # refused RESULT_TRIES times: the client never read
        }

    def handlers(self) -> dict[str, Callable[[Call], Any]]:
        return {
            P.FN_HELLO: self.on_hello,
            P.FN_CLIENT: self.on_client,
            P.FN_SUBMIT: self.on_submit,
            P.FN_DONE: self.on_done,
            P.FN_CANCEL: self.on_cancel,
            P.FN_STOLEN: self.on_stolen,
            P.FN_RELEASE: self.on_release,
            P.FN_SCATTER: self.on_scatter,
            P.FN_STORED: self.on_stored,
            **self.sessions.handlers(),
        }

    # -- workers and executors ----------------------------------------------
    def on_hello(self, call: Call) -> Any:
        body = P.fields(call.body, executor_id=str, worker=str)
        assert call.peer is not None
        direct = call.body.get("direct") or ""
        store = call.body.get("store") or ""
        if not isinstance(direct, str) or not isinstance(store, str):
            raise ProtocolError("fields 'direct' and 'store' are strings")
        old = self.workers.pop(call.peer, None)
        if old is not None:
            # The same process again (its executor registered anew): it dropped what it
            # had not started and keeps its leases; nothing of it was lost.
            self._requeue(old, rejoined=True)
        worker = FnWorker(call.peer, body["executor_id"], body["worker"], direct)
        worker.store = store
        self.workers[call.peer] = worker
        if self.deps.scatters:
            self.deps.workers_changed()
        self.pump()
        return {
            "window": self.window,
            "allow_pickle": self.allow_pickle,
            "max_value_bytes": self.max_value_bytes,
        }

    @property
    def max_value_bytes(self) -> int:
        """The largest argument or result (``max-value-bytes``), told to clients and workers."""
        big = getattr(self.channel, "big_in", None)
        return big.max_value_bytes if big is not None else DEFAULT_MAX_VALUE_BYTES

    def set_resources(self, executor_id: str, resources: Any) -> None:
        """What ``executor_id`` advertised when it registered (None: one cpu per worker)."""
        try:
            advertised = place.parse_demand(resources) if resources is not None else None
        except ProtocolError as exc:
            log.warning("executor %s advertised bad resources: %s", executor_id, exc)
            advertised = None
        if resources is not None and advertised is None and isinstance(resources, dict):
            advertised = dict(place.DEFAULT_DEMAND)  # exactly one cpu
        if advertised is None:
            self.resources.pop(executor_id, None)
        else:
            self.resources[executor_id] = advertised
        self.pump()

    def capacity(self, executor_id: str) -> place.Resources:
        advertised = self.resources.get(executor_id)
        if advertised is not None:
            return advertised
        return {"cpu": float(sum(w.executor_id == executor_id for w in self.workers.values()))}

    def worker_lost(self, executor_id: str, worker: str | None = None) -> None:
        """A worker process (or, with ``worker=None``, a whole executor) is gone."""
        for peer, w in list(self.workers.items()):
            if w.executor_id == executor_id and (worker is None or w.name == worker):
                del self.workers[peer]
                self._requeue(w)
        self.pump()

    def _requeue(self, worker: FnWorker, rejoined: bool = False) -> None:
        if not rejoined:
            self.leases.worker_gone(worker.peer)
            self.deps.holder_lost(worker.peer)
        for ref, pending in list(self._cancels.items()):
            pending.peers.discard(worker.peer)
            if not pending.peers:  # its task is retried (it may run) or lost: not canceled
                del self._cancels[ref]
                pending.call.reply({"canceled": pending.canceled})
        for key in sorted(worker.inflight, reverse=True):  # each to the head: in their order
            task = self.inflight.pop(key, None)
            if task is None:
                continue
            task.worker = None
            if rejoined or task.retries > 0:
                if not rejoined:
                    task.retries -= 1
                    self.stats["retried"] += 1
                if task.inputs is not None:
                    self.deps.again(task)  # its inputs may have died with the worker
                else:
                    self.queue.push_front(task)  # ahead of the tasks that came after it
            else:
                self.stats["lost"] += 1
                error = worker_lost(f"worker {worker.name} on {worker.executor_id} died running it")
                self.deps.fail(task, pack(error))
        worker.inflight.clear()

    # -- clients ------------------------------------------------------------
    def on_client(self, call: Call) -> Any:
        return {
            "allow_pickle": self.allow_pickle,
            "window": self.window,
            "max_value_bytes": self.max_value_bytes,
            **self.sessions.hello(call.peer or b""),
        }

    def on_submit(self, call: Call) -> Any:
        """Header ``{"tasks": [[tid, fn, retries, nframes(, options)], ...], "reply": addr}``,
        then every task's frames; ``options``: ``priority``, ``resources``, ``name``."""
        body = P.fields(call.body, tasks=list)
        assert call.peer is not None
        client = call.peer
        reply = body.get("reply") or ""
        if not isinstance(reply, str):
            raise ProtocolError("field 'reply' is not a string")
        refused: list[tuple[int, bool, Sequence[Any]]] = []
        try:
            self.by_client.check_room(client, len(body["tasks"]), self.max_per_client)
        except LimitExceeded as exc:
            if not call.is_event:
                raise  # a request: the error reply says it
            # ``zdf.connect`` submits one-way: each task's future gets the refusal.
            self.stats["over_limit"] += len(body["tasks"])
            error = pack(limit_error(exc.message))
            tids = [tid for tid, *_ in P.submitted_tasks(body["tasks"], call.frames)]
            self._send_results(client, [(tid, False, error) for tid in tids])
            return None
        for tid, fn, retries, frames, options in P.submitted_tasks(body["tasks"], call.frames):
            if (client, tid) in self.by_client:
                continue  # submitted again after a failover: it is already here
            if fn == P.PICKLED_FN and not self.allow_pickle:
                refused.append((tid, False, pack(PICKLE_REFUSED)))
                continue
            priority, demand, name = task_options(options) if options else (0, None, "")
            deps = options.get("deps") if options else None
            if demand is not None and (why := self._infeasible(demand)):
                self.stats["infeasible"] += 1
                refused.append((tid, False, pack(infeasible_error(why))))
                continue
            task = FnTask(
                next(self._keys),
                client,
                tid,
                fn,
                retries,
                frames,
                reply,
                None,
                priority,
                demand,
                name,
            )
            if deps is not None:
                self.deps.admit(task, deps)
                continue
            self.queue.push(task)
            self.by_client[(client, tid)] = task
        self.stats["submitted"] += len(body["tasks"])
        if refused:
            self._send_results(client, refused)
        if body.get("lease") and reply:
            self.leases.grant(
                client, self.workers.values(), self.executor_alive, self._free_for(client)
            )
        self._pump_soon()
        return None

    def _free_for(self, client: bytes) -> Callable[[Any], bool]:
        """Whether a worker runs no task of a client other than ``client``."""

        def free(worker: Any) -> bool:
            return all(self.inflight[key].client == client for key in worker.inflight)

        return free

    def _infeasible(self, demand: place.Resources) -> str:
        """Why no executor known now could ever run a task of ``demand`` ("": one can, or
        none is known yet and one may come)."""
        executors = {w.executor_id for w in self.workers.values()}
        if not executors:
            return ""
        best = [self.capacity(e) for e in sorted(executors)]
        if any(place.covers(have, demand) for have in best):
            return ""
        offered = "; ".join(place.describe(have) for have in best)
        return f"it asks for {place.describe(demand)}, and no executor has that ({offered})"

    def on_cancel(self, call: Call) -> Any:
        """Withdraw tasks: at once if queued; a task on a worker only if it has not
        started there (asked with ``fn_steal``; a request is answered then)."""
        body = P.fields(call.body, tids=list)
        assert call.peer is not None
        canceled: list[int] = []
        withdraw: dict[bytes, list[int]] = {}
        for tid in body["tids"]:
            task = self.by_client.get((call.peer, tid))
            if task is None:
                continue
            if task.worker is None:
                self.by_client.pop((call.peer, tid))
                self._unqueue(task)  # or it waits for inputs: dropped when they are ready
                canceled.append(tid)
            elif call.is_event:
                # An older client that does not wait for the answer: its result is dropped.
                self.by_client.pop((call.peer, tid))
                task.client = b""
            elif not self._first_on_worker(task):
                withdraw.setdefault(task.worker, []).append(task.key)
            # else its worker runs it (or will, first of all it has): it is not canceled
        self.stats["canceled"] += len(canceled)
        if not withdraw:
            return {"canceled": canceled}
        ref = next(self._refs)
        self._cancels[ref] = PendingCancel(call, set(withdraw), canceled)
        for peer, keys in withdraw.items():
            self.channel.notify(P.FN_STEAL, {"keys": keys, "ref": ref}, peer=peer)
        return DEFER

    def _first_on_worker(self, task: FnTask) -> bool:
        worker = self.workers.get(task.worker or b"")
        if worker is None:
            return True
        return task.sent == min(self.inflight[key].sent for key in worker.inflight)

    def _unqueue(self, task: FnTask) -> None:
        self.queue.remove(task)

    # -- dispatch -----------------------------------------------------------
    def _pump_soon(self) -> None:
        if self._deferred:
            self._dirty = True
        else:
            self.pump()

    def _on_drained(self) -> None:
        if self._dirty:
            self._dirty = False
            self.pump()

    def pump(self) -> None:
        """Place what is queued (see ``zdf.master.fnplacement``), then look for work to
        take back from a busy worker for an idle one."""
        if self.queue and self.workers:
            self._place()
        self._balance()

    def _place(self) -> None:
        lessees = self.leases.lessees()
        ready = [
            w
            for w in self.workers.values()
            if len(w.inflight) < self.window and self.executor_alive(w.executor_id)
        ]
        if not ready:
            return
        # Workers over their memory limit last, then those leased to a client, then the
        # least loaded first.
        ready.sort(
            key=lambda w: (w.over_limit, w.peer in lessees, w.unknown > 0, w.load, len(w.inflight))
        )
        skipped: list[FnTask] = []
        while self.queue:
            share = max(1, -(-len(self.queue) // len(ready)))
            placed = 0
            for worker in ready:
                if not self.queue:
                    break
                placed += self._fill(worker, min(share, MAX_BATCH), lessees)
            if placed:
                continue
            head = self.queue.peek()
            if head.demand is None or len(skipped) >= MAX_SKIP:
                break
            skipped.append(self.queue.pop())  # waits for resources: others may pass
        for task in reversed(skipped):
            self.queue.push_front(task)

    def _fill(self, worker: FnWorker, limit: int, lessees: dict[bytes, set[bytes]]) -> int:
        """Send ``worker`` what it may take from the head of the queue, up to ``limit``."""
        header: list[tuple[list[Any], list[Any]]] = []  # a task's entry and its frames
        clients: set[bytes] = set()
        queue, by_client, inflight = self.queue, self.by_client, self.inflight
        mine = worker.inflight
        was_idle = not mine
        last_kind: str | None = None
        estimate: float | None = None
        room = min(limit, self.window - len(mine))
        while queue and room > 0:
            task = queue.peek()
            if task.client and (task.client, task.tid) not in by_client:
                queue.pop()  # canceled
                continue
            kind = task.name or task.fn
            if kind is not last_kind:  # a burst is mostly of one function
                last_kind, estimate = kind, self.durations.estimate(kind)
            if mine and (
                estimate is None or worker.unknown or worker.load + estimate > place.FEED_SECONDS
            ):
                break  # it would wait behind work that takes longer than a round trip
            if (task.demand is not None or worker.demands or not mine) and not self._fits(
                worker, task
            ):
                break
            queue.pop()
            room -= 1
            key = task.key
            task.worker = worker.peer
            task.estimate = estimate
            task.sent = next(self._sends)
            inflight[key] = task
            mine.add(key)
            if task.demand is not None:
                worker.demands[key] = task.demand
            if estimate is None:
                worker.unknown += 1
            else:
                worker.load += estimate
            clients.add(task.client)
            entry = [key, task.fn, len(task.frames), task.reply, task.tid]
            if task.inputs is not None:
                entry.append(self.deps.input_specs(task))
            header.append((entry, task.frames))
        if not header:
            return 0
        if was_idle:
            worker.since = self.clock()
        if worker.peer in lessees and lessees[worker.peer] - clients:
            self.leases.release(worker.peer, but=next(iter(clients)) if len(clients) == 1 else b"")
        sent = len(header)
        for batch in split_batch(header, lambda entry: entry[1]):  # a big value goes alone
            tasks = [entry for entry, _ in batch]
            frames = [frame for _, task_frames in batch for frame in task_frames]
            if not self.channel.notify(P.FN_RUN, {"tasks": tasks}, peer=worker.peer, frames=frames):
                self._not_sent(worker, [entry[0] for entry in tasks])
                sent -= len(tasks)
        return sent

    def place_ready(self, task: FnTask, prefer: FnWorker | None) -> None:
        """A task whose inputs are ready: to ``prefer`` (where most of its input bytes
        are) if it can start there now, else queued for any worker."""
        worker = prefer
        if (
            worker is not None
            and len(worker.inflight) < self.window
            and self.executor_alive(worker.executor_id)
            and self._starts_now(worker, task)
        ):
            self._send_one(worker, task)
            return
        self.queue.push(task)
        self._pump_soon()

    def _starts_now(self, worker: FnWorker, task: FnTask) -> bool:
        if worker.inflight:
            estimate = self.durations.estimate(task.kind)
            if estimate is None or worker.unknown or worker.load + estimate > place.FEED_SECONDS:
                return False
        if task.demand is not None or worker.demands or not worker.inflight:
            return self._fits(worker, task)
        return True

    def _send_one(self, worker: FnWorker, task: FnTask) -> None:
        estimate = self.durations.estimate(task.kind)
        if not worker.inflight:
            worker.since = self.clock()
        task.worker = worker.peer
        task.estimate = estimate
        task.sent = next(self._sends)
        self.inflight[task.key] = task
        worker.inflight.add(task.key)
        if task.demand is not None:
            worker.demands[task.key] = task.demand
        if estimate is None:
            worker.unknown += 1
        else:
            worker.load += estimate
        if worker.peer in self.leases.lessees():
            self.leases.release(worker.peer, but=task.client)
        entry = [task.key, task.fn, len(task.frames), task.reply, task.tid]
        if task.inputs is not None:
            entry.append(self.deps.input_specs(task))
        if not self.channel.notify(
            P.FN_RUN, {"tasks": [entry]}, peer=worker.peer, frames=task.frames
        ):
            self._not_sent(worker, [task.key])

    def _not_sent(self, worker: FnWorker, keys: list[int]) -> None:
        """Tasks the ROUTER refused to send to ``worker`` (its queue full, or gone): the
        worker never saw them, so they go back to the head of the queue, in order, and
        are placed again after ``UNSENT_RETRY`` (never lost, never run twice)."""
        taken = []
        for key in keys:
            task = self.inflight.get(key)
            if task is not None and task.worker == worker.peer:
                self._unassign(worker, task)
                taken.append(task)
        for task in reversed(taken):  # as they were (inputs ready): placed by the pump,
            self.queue.push_front(task)  # not at once (the same worker would refuse again)
        self.stats["run_unsent"] += len(taken)
        reactor = getattr(self.channel, "reactor", None)
        if reactor is not None:
            reactor.call_later(UNSENT_RETRY, self.pump)

    def record(
        self, client: bytes, tid: int, skey: Any, holders: list[bytes], state: str
    ) -> FnTask:
        """A record of a value with no task of its own (scattered, or run under a lease)."""
        record = FnTask(next(self._keys), client, tid, "", 0, [])
        record.skey = skey or None
        record.holders = holders
        record.state = state
        return record

    def _fits(self, worker: FnWorker, task: FnTask) -> bool:
        if (
            task.demand is None
            and not worker.demands
            and (worker.inflight or worker.executor_id not in self.resources)
        ):
            return True  # one cpu per worker: the default takes nothing more
        siblings = [w for w in self.workers.values() if w.executor_id == worker.executor_id]
        return place.fits(worker, task.demand, self.capacity(worker.executor_id), siblings)

    def _unassign(self, worker: FnWorker | None, task: FnTask) -> None:
        key = task.key
        del self.inflight[key]
        task.worker = None
        if worker is None:
            return
        worker.inflight.discard(key)
        if worker.demands:
            worker.demands.pop(key, None)
        if task.estimate is None:
            worker.unknown -= 1
        elif worker.inflight:
            worker.load -= task.estimate
        else:
            worker.load = 0.0  # no drift from float sums

    # -- work stealing --------------------------------------------------------
    def _balance(self) -> None:
        """An idle worker and nothing queued: take back tasks waiting on a late worker."""
        if self.queue or len(self.workers) < 2:
            return
        alive = [w for w in self.workers.values() if self.executor_alive(w.executor_id)]
        idle = sum(1 for w in alive if not w.inflight)
        if not idle:
            return
        victims = sorted(
            (w for w in alive if len(w.inflight) > 1 and not w.stealing),
            key=lambda w: -len(w.inflight),
        )
        now = self.clock()
        next_due: float | None = None
        for victim in victims[:idle]:
            due = victim.since + victim.load + STEAL_SLACK
            if now >= due:
                victim.stealing = True
                self.channel.notify(P.FN_STEAL, {"keys": sorted(victim.inflight)}, peer=victim.peer)
            elif next_due is None or due < next_due:
                next_due = due
        reactor = getattr(self.channel, "reactor", None)
        if next_due is not None and reactor is not None:
            if self._steal_timer is not None:
                self._steal_timer.cancel()
            self._steal_timer = reactor.call_later(next_due - now, self._on_steal_timer)

    def _on_steal_timer(self) -> None:
        self._steal_timer = None
        self._balance()

    def on_stolen(self, call: Call) -> Any:
        """``{"keys": [...], "ref": n}``: the tasks a worker gave up before starting them,
        for a steal (no ``ref``) or a cancel (``ref``)."""
        body = P.fields(call.body, keys=list)
        peer = call.peer or b""
        worker = self.workers.get(peer)
        ref = body.get("ref")
        pending = self._cancels.get(ref) if isinstance(ref, int) else None
        if worker is not None and ref is None:
            worker.stealing = False
        taken = []
        for key in body["keys"]:
            task = self.inflight.get(key) if isinstance(key, int) else None
            if task is not None and task.worker == peer:
                self._unassign(worker, task)
                taken.append(task)
        lost = body.get("lost") or []
        for task in reversed(taken):  # each to the head: in their order
            if task.inputs is not None and pending is None:
                self.deps.again(task, lost if isinstance(lost, list) else [])
            elif pending is not None:
                self.by_client.pop((task.client, task.tid), None)
                self.stats["canceled"] += 1
                pending.canceled.append(task.tid)
            else:
                self.queue.push_front(task)
                self.stats["stolen"] += 1
        if pending is not None:
            pending.peers.discard(peer)
            if not pending.peers:
                del self._cancels[ref]  # type: ignore[arg-type]
                pending.call.reply({"canceled": pending.canceled})
        if worker is not None and taken:
            worker.since = self.clock()
        self._pump_soon()
        return None

    # -- results --------------------------------------------------------------
    def on_done(self, call: Call) -> Any:
        """Header ``{"results": [[key, ok, nframes, seconds], ...]}`` then every result's
        frames; ``nframes`` 0: the worker sent the result to the client itself;
        ``seconds``: how long the call took; ``direct``: how many tasks it ran under
        leases since its last report, ``direct_failed`` how many of those raised."""
        body = P.fields(call.body, results=list)
        direct = body.get("direct", 0)
        if isinstance(direct, int) and direct > 0:
            # Sent to the worker past this queue: submitted and completed at once here.
            self.stats["submitted"] += direct
            self.stats["completed"] += direct
            self.stats["direct"] += direct
            failed = body.get("direct_failed", 0)
            if isinstance(failed, int) and failed > 0:
                self.stats["failed"] += min(failed, direct)
        worker = self.workers.get(call.peer or b"")
        if worker is not None:
            worker.over_limit = body.get("over") is True
        frames = call.frames
        offset = 0
        per_client: dict[bytes, list[tuple[int, bool, Sequence[Any]]]] = {}
        drops: dict[bytes, list[Any]] = {}
        finished = self.deps.finished
        took: dict[str, list[Any]] = {}  # function: [seconds, calls]
        for entry in body["results"]:
            if not (isinstance(entry, list) and 3 <= len(entry) <= 5):
                raise ProtocolError("each result is [key, ok, nframes, seconds, nbytes]")
            key, ok, nframes = entry[:3]
            if not isinstance(nframes, int) or nframes < 0 or offset + nframes > len(frames):
                raise ProtocolError("result frames missing")
            result_frames = frames[offset : offset + nframes]
            offset += nframes
            task = self.inflight.get(key)
            if task is None or task.worker != call.peer:
                continue  # a late answer from a task that was retried elsewhere
            if len(entry) >= 4 and isinstance(entry[3], int | float):
                timed = took.get(task.kind)
                if timed is None:
                    took[task.kind] = [float(entry[3]), 1]
                else:
                    timed[0] += entry[3]
                    timed[1] += 1
            self._unassign(worker, task)
            self.stats["completed"] += 1
            self.stats["failed"] += not ok
            if (
                self.by_client.pop((task.client, task.tid), None) is not None
                and task.client
                and nframes
                and not task.reply  # else its worker answered the client
            ):
                per_client.setdefault(task.client, []).append((task.tid, bool(ok), result_frames))
            nbytes = entry[4] if len(entry) == 5 and isinstance(entry[4], int) else 0
            finished(task, call.peer or b"", bool(ok), nbytes, result_frames, drops)
        for kind, (total, count) in took.items():  # one average per function and report
            self.durations.learn(kind, total / count)
        if worker is not None:
            worker.since = self.clock()
            worker.done += len(body["results"])
        for client, results in per_client.items():
            self._send_results(client, results)
        if drops:
            self.deps._send_drops(drops)
        self._pump_soon()
        return None

    # -- task graphs (zdf.master.fndeps) ----------------------------------------
    def on_release(self, call: Call) -> Any:
        self.deps.release(call.peer or b"", call.body if isinstance(call.body, dict) else {})
        return None

    def on_scatter(self, call: Call) -> Any:
        return self.deps.on_scatter(call)

    def on_stored(self, call: Call) -> Any:
        body = P.fields(call.body, keys=list)
        worker = self.workers.get(call.peer or b"")
        if worker is not None:
            worker.over_limit = body.get("over") is True
        self.deps.stored(call.peer or b"", body["keys"])
        self._pump_soon()
        return None

    def send_results(
        self, client: bytes, results: Sequence[tuple[int, bool, Sequence[Any]]]
    ) -> None:
        self._send_results(client, results)

    def _send_results(
        self, client: bytes, results: Sequence[tuple[int, bool, Sequence[Any]]], tries: int = 1
    ) -> None:
        for batch in split_batch(results, lambda result: result[2]):  # a big value goes alone
            header = [[tid, ok, len(frames)] for tid, ok, frames in batch]
            out: list[Any] = []
            for _, _, frames in batch:
                out.extend(frames)
            if not self.channel.notify(P.FN_RESULT, {"results": header}, peer=client, frames=out):
                self._results_not_sent(client, batch, tries)

    def _results_not_sent(
        self, client: bytes, batch: Sequence[tuple[int, bool, Sequence[Any]]], tries: int
    ) -> None:
        """Results the ROUTER refused (the client does not read, or is gone): sent again
        after ``UNSENT_RETRY``, ``RESULT_TRIES`` times; then counted and logged as lost."""
        reactor = getattr(self.channel, "reactor", None)
        if reactor is None or tries >= RESULT_TRIES:
            self.stats["results_lost"] += len(batch)
            log.warning("%d results for client %r lost: it read none of them", len(batch), client)
            return
        self.stats["results_resent"] += len(batch)
        reactor.call_later(UNSENT_RETRY, lambda: self._send_results(client, batch, tries + 1))

    def status(self) -> dict[str, Any]:
        return {
            **self.stats,
            "queued": len(self.queue),
            "inflight": len(self.inflight),
            "workers": len(self.workers),
            "leases": len(self.leases),
            **self.deps.status(),
        }


def task_options(options: dict[str, Any]) -> tuple[int, place.Resources | None, str]:
    """A task's ``priority``, ``resources`` and ``name`` (``client.options``)."""
    priority = options.get("priority", 0)
    name = options.get("name", "")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ProtocolError("option 'priority' is not an integer")
    if not isinstance(name, str):
        raise ProtocolError("option 'name' is not a string")
    return priority, place.parse_demand(options.get("resources")), name


def limit_error(message: str) -> dict[str, str]:
    return {"type": "LimitExceeded", "module": "zdf.errors", "message": message, "traceback": ""}


def infeasible_error(why: str) -> dict[str, str]:
    return {
        "type": "InfeasibleTask",
        "module": "zdf.errors",
        "message": f"no executor can run this task: {why}",
        "traceback": "",
    }
