"""Short function tasks: one queue in the master, a prefetch window per worker.

Theory of operation. A client says ``fn_client`` once (the answer tells it
whether pickled functions are accepted), then sends ``fn_submit`` batches; each
task is a client task id, a function path, a retry budget and its argument
frames, which the master forwards without unpacking. A batch may name the
client's result address (``reply``). Worker processes connect a DEALER straight
to the master and say ``fn_hello``; from then on the master keeps up to
``window`` tasks in flight on each, sending them in batches (``fn_run``), so a
worker always has the next task at hand.

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
removes it; a task already on a worker runs, and its result is dropped.

A client running one task at a time may lease a worker and send such tasks
to it directly (``zdf.master.fnleases``); those reach the master only as a
count in ``fn_done``.

Pickled functions (``fn`` = ``P.PICKLED_FN``, the cloudpickle bytes as the task's
first frame) are refused with a ``PermissionError`` result unless the master's
``allow-pickle`` is set.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zdf import protocol as P
from zdf.errors import ProtocolError, worker_lost
from zdf.master.fnleases import Leases
from zdf.wire.payload import pack
from zdf.wire.rpc import Call, Channel

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


@dataclass(slots=True)
class FnTask:
    key: int
    client: bytes
    tid: int
    fn: str
    retries: int
    frames: list[Any]
    reply: str = ""  # the client's result address ("": results come back through the master)
    worker: bytes | None = None


@dataclass
class FnWorker:
    peer: bytes
    executor_id: str
    name: str
    direct: str = ""  # where it takes tasks under a lease ("": it does not)
    inflight: set[int] = field(default_factory=set)
    done: int = 0


class FunctionQueue:
    def __init__(
        self,
        channel: Channel,
        window: int = DEFAULT_WINDOW,
        executor_alive: Callable[[str], bool] | None = None,
        allow_pickle: bool = False,
    ) -> None:
        self.channel = channel
        self.window = window
        self.allow_pickle = allow_pickle
        self.executor_alive = executor_alive or (lambda _id: True)
        self.queue: deque[FnTask] = deque()
        self.inflight: dict[int, FnTask] = {}
        self.workers: dict[bytes, FnWorker] = {}
        self.by_client: dict[tuple[bytes, int], FnTask] = {}
        self._keys = itertools.count(1)
        self.leases = Leases(channel)
        self.stats = {
            "submitted": 0,
            "completed": 0,
            "failed": 0,  # of the completed: the function raised (counted for metrics)
            "direct": 0,  # of the completed: sent to a leased worker, not through the queue
            "retried": 0,
            "lost": 0,
            "canceled": 0,
        }

    def handlers(self) -> dict[str, Callable[[Call], Any]]:
        return {
            P.FN_HELLO: self.on_hello,
            P.FN_CLIENT: self.on_client,
            P.FN_SUBMIT: self.on_submit,
            P.FN_DONE: self.on_done,
            P.FN_CANCEL: self.on_cancel,
        }

    # -- workers ------------------------------------------------------------
    def on_hello(self, call: Call) -> Any:
        body = P.fields(call.body, executor_id=str, worker=str)
        assert call.peer is not None
        direct = call.body.get("direct") or ""
        if not isinstance(direct, str):
            raise ProtocolError("field 'direct' is not a string")
        old = self.workers.pop(call.peer, None)
        if old is not None:
            self._requeue(old)
        self.workers[call.peer] = FnWorker(call.peer, body["executor_id"], body["worker"], direct)
        self.pump()
        return {"window": self.window}

    def worker_lost(self, executor_id: str, worker: str | None = None) -> None:
        """A worker process (or, with ``worker=None``, a whole executor) is gone."""
        for peer, w in list(self.workers.items()):
            if w.executor_id == executor_id and (worker is None or w.name == worker):
                del self.workers[peer]
                self._requeue(w)
        self.pump()

    def _requeue(self, worker: FnWorker) -> None:
        self.leases.worker_gone(worker.peer)
        retry = []
        for key in sorted(worker.inflight):
            task = self.inflight.pop(key, None)
            if task is None:
                continue
            if task.retries > 0:
                task.retries -= 1
                task.worker = None
                retry.append(task)
                self.stats["retried"] += 1
            else:
                self.stats["lost"] += 1
                self.by_client.pop((task.client, task.tid), None)
                error = worker_lost(f"worker {worker.name} on {worker.executor_id} died running it")
                self._send_results(task.client, [(task.tid, False, pack(error))])
        self.queue.extendleft(reversed(retry))

    # -- clients ------------------------------------------------------------
    def on_client(self, call: Call) -> Any:
        return {"allow_pickle": self.allow_pickle, "window": self.window}

    def on_submit(self, call: Call) -> Any:
        """Header ``{"tasks": [[tid, fn, retries, nframes], ...], "reply": addr}``, then
        every task's frames."""
        body = P.fields(call.body, tasks=list)
        assert call.peer is not None
        client = call.peer
        reply = body.get("reply") or ""
        if not isinstance(reply, str):
            raise ProtocolError("field 'reply' is not a string")
        refused: list[tuple[int, bool, Sequence[Any]]] = []
        for tid, fn, retries, frames in P.submitted_tasks(body["tasks"], call.frames):
            if (client, tid) in self.by_client:
                continue  # submitted again after a failover: it is already here
            if fn == P.PICKLED_FN and not self.allow_pickle:
                refused.append((tid, False, pack(PICKLE_REFUSED)))
                continue
            task = FnTask(next(self._keys), client, tid, fn, retries, frames, reply)
            self.queue.append(task)
            self.by_client[(client, tid)] = task
        self.stats["submitted"] += len(body["tasks"])
        if refused:
            self._send_results(client, refused)
        if body.get("lease") and reply:
            self.leases.grant(client, self.workers.values(), self.executor_alive)
        self.pump()
        return None

    def on_cancel(self, call: Call) -> Any:
        body = P.fields(call.body, tids=list)
        assert call.peer is not None
        canceled = []
        for tid in body["tids"]:
            task = self.by_client.pop((call.peer, tid), None)
            if task is None:
                continue
            if task.worker is None:
                try:
                    self.queue.remove(task)
                except ValueError:
                    pass
                canceled.append(tid)
            else:
                # Already on a worker: let it run, drop its result.
                self.inflight[task.key].client = b""
        self.stats["canceled"] += len(canceled)
        return {"canceled": canceled}

    # -- dispatch -----------------------------------------------------------
    def pump(self) -> None:
        """Fill every worker's window from the queue, one batch per worker per round."""
        if not self.queue or not self.workers:
            return
        progress = True
        while self.queue and progress:
            progress = False
            for worker in self.workers.values():
                room = self.window - len(worker.inflight)
                if room <= 0 or not self.queue:
                    continue
                if not self.executor_alive(worker.executor_id):
                    continue
                self._send_batch(worker, min(room, MAX_BATCH))
                progress = True

    def _send_batch(self, worker: FnWorker, count: int) -> None:
        header: list[list[Any]] = []
        frames: list[Any] = []
        while self.queue and len(header) < count:
            task = self.queue.popleft()
            if task.client and (task.client, task.tid) not in self.by_client:
                continue  # canceled
            task.worker = worker.peer
            self.inflight[task.key] = task
            worker.inflight.add(task.key)
            header.append([task.key, task.fn, len(task.frames), task.reply, task.tid])
            frames.extend(task.frames)
        if header:
            self.channel.notify(P.FN_RUN, {"tasks": header}, peer=worker.peer, frames=frames)

    def on_done(self, call: Call) -> Any:
        """Header ``{"results": [[key, ok, nframes], ...]}`` then every result's frames;
        ``nframes`` 0: the worker sent the result to the client itself; ``direct``: how
        many tasks it ran under leases since its last report."""
        body = P.fields(call.body, results=list)
        direct = body.get("direct", 0)
        if isinstance(direct, int) and direct > 0:
            self.stats["completed"] += direct
            self.stats["direct"] += direct
        worker = self.workers.get(call.peer or b"")
        frames = call.frames
        offset = 0
        per_client: dict[bytes, list[tuple[int, bool, Sequence[Any]]]] = {}
        for entry in body["results"]:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ProtocolError("each result is [key, ok, nframes]")
            key, ok, nframes = entry
            if not isinstance(nframes, int) or nframes < 0 or offset + nframes > len(frames):
                raise ProtocolError("result frames missing")
            result_frames = frames[offset : offset + nframes]
            offset += nframes
            task = self.inflight.get(key)
            if task is None or task.worker != call.peer:
                continue  # a late answer from a task that was retried elsewhere
            del self.inflight[key]
            if worker is not None:
                worker.inflight.discard(key)
                worker.done += 1
            self.stats["completed"] += 1
            self.stats["failed"] += not ok
            if (
                self.by_client.pop((task.client, task.tid), None) is not None
                and task.client
                and nframes
            ):
                per_client.setdefault(task.client, []).append((task.tid, bool(ok), result_frames))
        for client, results in per_client.items():
            self._send_results(client, results)
        self.pump()
        return None

    def _send_results(
        self, client: bytes, results: Sequence[tuple[int, bool, Sequence[Any]]]
    ) -> None:
        header = [[tid, ok, len(frames)] for tid, ok, frames in results]
        out: list[Any] = []
        for _, _, frames in results:
            out.extend(frames)
        self.channel.notify(P.FN_RESULT, {"results": header}, peer=client, frames=out)

    def status(self) -> dict[str, Any]:
        return {
            **self.stats,
            "queued": len(self.queue),
            "inflight": len(self.inflight),
            "workers": len(self.workers),
            "leases": len(self.leases),
        }
