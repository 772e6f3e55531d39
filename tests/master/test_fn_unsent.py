"""Function-task messages the master's ROUTER refuses (a peer's queue full, or the peer
gone: ``zdf.master.router``) are not lost: tasks go back to the queue and are sent
again, results are sent again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.master.test_fnqueue import CLIENT, FakeChannel, runs, submit, workers
from zdf import protocol as P
from zdf.master import fnqueue
from zdf.master.fnqueue import FunctionQueue
from zdf.wire.reactor import Reactor

pytestmark = pytest.mark.timeout(30)


class RefusingChannel(FakeChannel):
    """Refuses the first ``refuse`` sends of ``op`` (as a full ROUTER queue does)."""

    def __init__(self, reactor: Reactor, op: str, refuse: int) -> None:
        super().__init__()
        self.reactor = reactor
        self.op = op
        self.refuse = refuse
        self.refused = 0

    def notify(
        self, op: str, body: Any = None, *, peer: bytes | None = None, frames: Any = ()
    ) -> bool:
        if op == self.op and self.refused < self.refuse:
            self.refused += 1
            return False
        return super().notify(op, body, peer=peer, frames=frames)


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fnqueue, "UNSENT_RETRY", 0.01)


def run_until(reactor: Reactor, cond: Any) -> None:
    reactor.run(until=cond, deadline=time.monotonic() + 10)
    assert cond()


def test_tasks_refused_by_the_router_are_sent_again_not_lost(reactor: Reactor) -> None:
    channel = RefusingChannel(reactor, P.FN_RUN, refuse=2)
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    workers(queue, 2)
    submit(queue, [1, 2])  # one per worker: both refused
    assert channel.refused == 2 and runs(channel) == {}
    assert queue.status()["inflight"] == 0 and queue.status()["queued"] == 2  # back in line
    run_until(reactor, lambda: sorted(t for ts in runs(channel).values() for t in ts) == [1, 2])
    assert queue.stats["run_unsent"] == 2 and queue.status()["inflight"] == 2


def test_results_refused_by_the_router_are_sent_again(reactor: Reactor) -> None:
    channel = RefusingChannel(reactor, P.FN_RESULT, refuse=3)
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    queue.send_results(CLIENT, [(7, True, [b"value"])])
    run_until(reactor, lambda: channel.of(P.FN_RESULT) != [])
    [(body, peer, frames)] = channel.of(P.FN_RESULT)
    assert body == {"results": [[7, True, 1]]} and peer == CLIENT and frames == [b"value"]
    assert queue.stats["results_resent"] == 3


def test_results_a_client_never_reads_are_counted_lost_in_the_end(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fnqueue, "RESULT_TRIES", 3)
    channel = RefusingChannel(reactor, P.FN_RESULT, refuse=1_000)
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    queue.send_results(CLIENT, [(7, True, [b"value"])])
    run_until(reactor, lambda: queue.stats["results_lost"] == 1)
    assert channel.refused == 3 and queue.stats["results_resent"] == 2


def test_a_dependent_task_refused_where_its_input_is_waits_in_the_queue(
    reactor: Reactor,
) -> None:
    """Placed where its input is (a worker just gone): refused, it goes back to the queue
    and the pump places it, instead of being offered to the same worker again at once
    (which recursed until Python gave up, and the task was never run)."""
    from tests.master.test_fndeps import finish
    from tests.master.test_fndeps import submit as submit_dep

    channel = RefusingChannel(reactor, P.FN_RUN, refuse=0)
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    queue.deps.depth = 0  # sent when its input is made, not ahead (see the next test)
    workers(queue, 2)
    submit_dep(queue, 1)
    submit_dep(queue, 2, deps=[1])
    channel.refuse = 1_000  # its input's holder refuses from now on
    holder = finish(queue, 1)
    assert queue.stats["run_unsent"] >= 1 and queue.status()["queued"] == 1
    channel.refuse = 0
    run_until(reactor, lambda: 2 in [t for ts in runs(channel).values() for t in ts])
    assert holder in runs(channel)


def test_a_task_refused_when_sent_ahead_waits_here_for_its_input(reactor: Reactor) -> None:
    """Sent ahead of its input (pipelined) and refused: it is nobody's, waits in the master
    for its input, and is placed once that is made."""
    from tests.master.test_fndeps import finish
    from tests.master.test_fndeps import submit as submit_dep

    channel = RefusingChannel(reactor, P.FN_RUN, refuse=0)
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    workers(queue, 2)
    submit_dep(queue, 1)
    channel.refuse = 1_000
    submit_dep(queue, 2, deps=[1])
    assert queue.stats["run_unsent"] == 1
    assert queue.status()["inflight"] == 1 and queue.status()["queued"] == 0
    channel.refuse = 0
    finish(queue, 1)
    run_until(reactor, lambda: 2 in [t for ts in runs(channel).values() for t in ts])
