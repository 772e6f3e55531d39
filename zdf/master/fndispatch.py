"""Sending queued and ready function tasks to workers (the master's dispatch).

Theory of operation. ``pump`` places what is queued, after the channel has
read every message waiting (``_pump_soon``: submissions and reports read
together are placed together, in fuller batches). Workers with room are taken
least loaded first (those over their memory limit, then those leased to a
client, last); each takes at most its share of the queue per pass, and only
what ``zdf.master.fnplacement`` allows: a task of unknown duration only when
it has nothing in flight, short tasks a few milliseconds' worth ahead. A task
whose inputs are ready (``zdf.master.fndeps``) goes straight to the worker
holding most of its input bytes when it can start there now
(``place_ready``), else to the queue. ``_unassign`` undoes what sending a
task counted on its worker.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zdf import protocol as P
from zdf.master import fnplacement as place
from zdf.master.fnorder import TaskOrder
from zdf.master.fntask import FnTask, FnWorker
from zdf.master.limits import TasksByClient
from zdf.wire.bigmsg import split_batch
from zdf.wire.rpc import Channel

if TYPE_CHECKING:
    from zdf.master.fndeps import Dependencies
    from zdf.master.fnleases import Leases

MAX_BATCH = 256
MAX_SKIP = 64  # queued tasks waiting for resources that others may pass in one pump
UNSENT_RETRY = 0.2
"""Seconds before messages the master's ROUTER refused (``zdf.master.router``) go again:
tasks go back to the queue, results are sent again (``fnqueue.RESULT_TRIES`` times at most)."""


class Dispatch:
    """The dispatch half of ``zdf.master.fnqueue.FunctionQueue``."""

    channel: Channel
    window: int
    executor_alive: Callable[[str], bool]
    queue: TaskOrder[FnTask]
    inflight: dict[int, FnTask]
    workers: dict[bytes, FnWorker]
    by_client: TasksByClient[FnTask]
    resources: dict[str, place.Resources]
    durations: place.Durations
    clock: Callable[[], float]
    leases: Leases
    deps: Dependencies
    _sends: itertools.count[int]
    _dirty: bool
    _deferred: bool
    stats: dict[str, int]

    def capacity(self, executor_id: str) -> place.Resources:
        advertised = self.resources.get(executor_id)
        if advertised is not None:
            return advertised
        return {"cpu": float(sum(w.executor_id == executor_id for w in self.workers.values()))}

    def _balance(self) -> None:
        """Work stealing (``zdf.master.fnsteal``) after each pump."""

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
        awaited: list[FnTask] = []  # tasks sent that others wait for
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
            if task.waiters:
                awaited.append(task)
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
        for task in awaited:  # their dependents may follow them there now
            if task.worker == worker.peer:
                self.deps.assigned(task)
        return sent

    def place_ready(self, task: FnTask, prefer: FnWorker | None) -> None:
        """A task whose inputs are ready: to ``prefer`` (where most of its input bytes
        are) if it can start there now and passes no queued task of a higher priority,
        else queued for any worker."""
        worker = prefer
        if (
            worker is not None
            and not (self.queue and self.queue.peek().priority > task.priority)
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
        self._count(worker, task)
        task.sent = next(self._sends)
        if worker.peer in self.leases.lessees():
            self.leases.release(worker.peer, but=task.client)
        self._send_entry(worker, task)

    def _count(self, worker: FnWorker, task: FnTask) -> None:
        """``task`` is ``worker``'s to run: counted in its flight and load."""
        estimate = self.durations.estimate(task.kind)
        if not worker.inflight:
            worker.since = self.clock()
        task.worker = worker.peer
        task.estimate = estimate
        self.inflight[task.key] = task
        worker.inflight.add(task.key)
        if task.demand is not None:
            worker.demands[task.key] = task.demand
        if estimate is None:
            worker.unknown += 1
        else:
            worker.load += estimate

    def _send_entry(self, worker: FnWorker, task: FnTask) -> None:
        entry = [task.key, task.fn, len(task.frames), task.reply, task.tid]
        if task.inputs is not None:
            entry.append(self.deps.input_specs(task))
        if not self.channel.notify(
            P.FN_RUN, {"tasks": [entry]}, peer=worker.peer, frames=task.frames
        ):
            self._not_sent(worker, [task.key])
            return
        if task.waiters:
            self.deps.assigned(task)

    def _not_sent(self, worker: FnWorker, keys: list[int]) -> None:
        """Tasks the ROUTER refused to send to ``worker`` (its queue full, or gone): the
        worker never saw them. Those with their inputs ready go back to the head of the
        queue, in order, placed again by the pump after ``UNSENT_RETRY`` (not at once: the
        same worker would refuse again); one sent ahead of its inputs waits for them here
        again. Never lost, never run twice."""
        taken, unsent = [], 0
        for key in keys:
            task = self.inflight.get(key)
            if task is not None and task.worker == worker.peer:
                ahead = key in worker.pipelined
                self._unassign(worker, task)
                unsent += 1
                if not ahead:
                    taken.append(task)
        for task in reversed(taken):
            self.queue.push_front(task)
        self.stats["run_unsent"] += unsent
        reactor = getattr(self.channel, "reactor", None)
        if reactor is not None:
            reactor.call_later(UNSENT_RETRY, self.pump)

    # -- tasks sent ahead of their inputs (pipelined: zdf.master.fndeps) ---------------
    def send_ahead(self, worker: FnWorker, task: FnTask) -> None:
        """``task``, whose inputs are not all made, to ``worker``, which will hold them: it
        waits there and starts as soon as they are in its store."""
        task.worker = worker.peer
        task.estimate = 0.0
        task.sent = next(self._sends)
        self.inflight[task.key] = task
        worker.pipelined.add(task.key)
        if worker.peer in self.leases.lessees():  # other clients' leases on it end
            self.leases.release(worker.peer, but=task.client)
        self._send_entry(worker, task)

    def promote(self, task: FnTask) -> None:
        """Every input of ``task``, sent ahead, is made: its worker runs it now."""
        worker = self.workers.get(task.worker or b"")
        if worker is None or task.key not in worker.pipelined:
            return
        worker.pipelined.discard(task.key)
        self._count(worker, task)

    def withdraw(self, task: FnTask) -> None:
        """``task``, sent ahead, will not run (an input failed): its worker forgets it."""
        peer = task.worker or b""
        worker = self.workers.get(peer)
        self._unassign(worker, task)
        if worker is not None:
            self.channel.notify(P.FN_FORGET, {"keys": [task.key]}, peer=peer)

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
        if worker.pipelined and key in worker.pipelined:
            worker.pipelined.discard(key)  # counted nowhere else
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
