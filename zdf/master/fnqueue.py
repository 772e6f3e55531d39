"""Short function tasks: one queue in the master, placed so that no worker idles.

The queue is split by concern: this module takes messages in (hellos,
submissions, reports); ``zdf.master.fndispatch`` sends tasks to workers,
``zdf.master.fnsteal`` takes them back (steals, cancels), ``zdf.master.fntask``
holds the task and worker records, and ``zdf.master.fndeps`` the task graphs.

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
from typing import Any

from zdf import protocol as P
from zdf.errors import LimitExceeded, ProtocolError, worker_lost
from zdf.master import fnplacement as place
from zdf.master.fndeps import Dependencies
from zdf.master.fndispatch import UNSENT_RETRY
from zdf.master.fnleases import Leases
from zdf.master.fnorder import TaskOrder
from zdf.master.fnsessions import DEFAULT_GRACE, ClientSessions
from zdf.master.fnsteal import Stealing
from zdf.master.fntask import (
    PICKLE_REFUSED,
    FnTask,
    FnWorker,
    PendingCancel,
    infeasible_error,
    limit_error,
    task_options,
)
from zdf.master.limits import DEFAULT_MAX_QUEUED_PER_CLIENT, TasksByClient
from zdf.wire.bigmsg import DEFAULT_MAX_VALUE_BYTES, split_batch
from zdf.wire.payload import pack
from zdf.wire.reactor import Timer
from zdf.wire.rpc import Call, Channel

__all__ = ["DEFAULT_WINDOW", "FnTask", "FnWorker", "FunctionQueue"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 64
RESULT_TRIES = 50  # results the ROUTER refused are sent again this many times at most


class FunctionQueue(Stealing):
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
        ahead, worker.pipelined = worker.pipelined, set()
        self.deps.blocked.pop(worker.peer, None)
        for key in sorted(worker.inflight | ahead, reverse=True):  # each to the head: in order
            task = self.inflight.pop(key, None)
            if task is None:
                continue
            task.worker = None
            if key in ahead:  # sent ahead of its inputs: it never started
                self.deps.again(task)
            elif rejoined or task.retries > 0:
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
            return all(
                self.inflight[key].client == client for key in worker.inflight | worker.pipelined
            )

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

    def record(
        self, client: bytes, tid: int, skey: Any, holders: list[bytes], state: str
    ) -> FnTask:
        """A record of a value with no task of its own (scattered, or run under a lease)."""
        record = FnTask(next(self._keys), client, tid, "", 0, [])
        record.skey = skey or None
        record.holders = holders
        record.state = state
        return record

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
        self.deps.send_notes()
        if worker is not None:
            self.deps.unblock(worker.peer)
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
            "canceling": len(self._cancels),  # cancels waiting for a worker's answer
            **self.deps.status(),
        }
