"""Work stealing and canceling tasks already sent to a worker.

Theory of operation. When a worker is idle, nothing queued fits it, and
another worker has had tasks waiting behind its current one for longer than
their estimates promised, the master asks that worker for its tasks not
started yet (``fn_steal``); it answers with the keys it gave up
(``fn_stolen``), which go back in the queue at their old place. The same
request withdraws a task for ``Future.cancel`` (``fn_cancel``, answered once
every worker asked said whether it had started it; ``ref`` ties the answer to
the request). The first task a worker has is taken as started without asking.
"""

from __future__ import annotations

import itertools
from typing import Any

from zdf import protocol as P
from zdf.master import fnplacement as place
from zdf.master.fndispatch import Dispatch
from zdf.master.fntask import FnTask, PendingCancel
from zdf.wire.reactor import Timer
from zdf.wire.rpc import DEFER, Call

STEAL_SLACK = place.FEED_SECONDS  # how late on its estimates a worker is before a steal


class Stealing(Dispatch):
    """The stealing and canceling half of ``zdf.master.fnqueue.FunctionQueue``."""

    stats: dict[str, int]
    _refs: itertools.count[int]
    _cancels: dict[int, PendingCancel]
    _steal_timer: Timer | None

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
        if task.key in worker.pipelined:
            return False  # it waits there for its inputs: not started
        return task.sent == min(self.inflight[key].sent for key in worker.inflight)

    def _unqueue(self, task: FnTask) -> None:
        self.queue.remove(task)

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
                if task.inputs is not None:
                    self.deps.canceled(task)  # its inputs are no longer held for it
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
