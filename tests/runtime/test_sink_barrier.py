"""The barrier protocol between sinks, one ``SinkBarrier`` driven by hand.

Links are never connected here (the fake context never resolves an address),
so what a barrier sends stays queued on its links, where the tests read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from zdf.runtime.bench.barrier import Pair, SinkBarrier
from zdf.runtime.operator import DONE, Operator
from zdf.wire.rpc import Call

from .helpers import FakeContext, params

pytestmark = pytest.mark.timeout(20)

# 2 tables x 3 versions over 3 streams: the writer of (t, v) is sink v % 3.
P = params(tables=2, rcd_cnt=12, ddl_freq=4, batch_size=4)


class Host(Operator):
    """An operator that only hosts a barrier."""


class Harness:
    def __init__(self, stream: int, written: list[int] | None = None) -> None:
        self.ctx = FakeContext(f"sink-{stream}", P.to_params())
        self.op = Host(self.ctx)
        self.waiting: list[Pair] = []
        self.changes = 0
        self.barrier = SinkBarrier(
            self.op,
            P,
            stream,
            np.asarray(written or [0] * P.tables),
            waiting=lambda: list(self.waiting),
            on_change=self._changed,
        )

    def _changed(self) -> None:
        self.changes += 1

    def deliver(self, op: str, body: Any) -> None:
        """A message on the barrier's ROUTER, as the reactor would hand it over."""
        handler = self.barrier.channel.handlers[op]
        handler(Call(self.barrier.channel, b"peer", op, 0, body, is_event=True))

    def sent(self, stream: int) -> list[tuple[str, Any]]:
        link = self.barrier.links[stream]
        out, link._queued = list(link._queued), []
        return out

    def close(self) -> None:
        self.op.close()


@pytest.fixture
def sink0() -> Iterator[Harness]:
    h = Harness(0)
    yield h
    h.close()


def test_the_writer_is_ready_only_once_every_stream_arrived(sink0: Harness) -> None:
    barrier = sink0.barrier
    assert P.writer(0, 3) == 0
    barrier.arrive([(0, 3)])  # its own stream: counted without a message
    assert sink0.sent(1) == [] and sink0.sent(2) == []
    sink0.deliver("arrive", {"stream": 1, "pairs": [[0, 3]]})
    sink0.deliver("arrive", {"stream": 1, "pairs": [[0, 3]]})  # a repeat changes nothing
    assert barrier.take() == ([], []) and sink0.changes == 0
    sink0.deliver("arrive", {"stream": 2, "pairs": [[0, 3]]})
    assert sink0.changes == 1
    assert barrier.take() == ([(0, 3)], [])
    assert barrier.take() == ([], [])


def test_announce_tells_every_other_sink_and_is_learned(sink0: Harness) -> None:
    sink0.barrier.announce([(0, 3)])
    for s in (1, 2):
        assert sink0.sent(s) == [("written", {"stream": 0, "pairs": [[0, 3]]})]
    assert sink0.barrier.take() == ([], [(0, 3)])
    assert sink0.barrier.known.tolist() == [3, 0]


def test_an_arrival_at_a_written_ddl_is_answered_at_once() -> None:
    """A replaying sink waits again at a DDL written long ago: its writer says so."""
    h = Harness(0, written=[3, 0])
    try:
        h.deliver("arrive", {"stream": 2, "pairs": [[0, 3]]})
        assert h.sent(2) == [("written", {"stream": 0, "pairs": [[0, 3]]})]
        assert h.barrier.take() == ([], []) and not h.barrier.arrived
    finally:
        h.close()


def test_messages_of_one_burst_go_out_as_one_per_peer(sink0: Harness) -> None:
    # Writers: (0, 1) -> 1, (1, 1) -> 1, (0, 2) -> 2.
    sink0.op.guard(lambda: sink0.barrier.arrive([(0, 1), (1, 1), (0, 2)]))()
    assert sink0.sent(1) == [("arrive", {"stream": 0, "pairs": [[0, 1], [1, 1]]})]
    assert sink0.sent(2) == [("arrive", {"stream": 0, "pairs": [[0, 2]]})]


def test_a_connecting_peer_gets_the_facts_and_the_open_arrivals_it_writes(
    sink0: Harness,
) -> None:
    class Link:
        def __init__(self) -> None:
            self.sent: list[tuple[str, Any]] = []

        def notify(self, op: str, body: Any = None) -> None:
            self.sent.append((op, body))

    sink0.barrier.known[:] = [1, 0]
    sink0.waiting = [(0, 2), (1, 2), (1, 1)]  # writers 2, 2 and 1
    link = Link()
    sink0.barrier._hello(2, link)  # type: ignore[arg-type]
    assert link.sent == [
        ("hello", {"stream": 0, "attempt": 0, "written": [1, 0]}),
        ("arrive", {"stream": 0, "pairs": [[0, 2], [1, 2]]}),
    ]


def test_hellos_and_done_flags_are_facts(sink0: Harness) -> None:
    sink0.deliver("hello", {"stream": 1, "attempt": 3, "written": [2, 0]})
    assert sink0.barrier.take() == ([], [(0, 2)])
    # A done sink wrote every DDL it is the writer of: sink 2 writes (0, 2) and (1, 2).
    sink0.ctx.resolving[("sink-2", DONE)]("0")
    assert sink0.barrier.known.tolist() == [2, 2]
    assert sink0.barrier.take() == ([], [(1, 2)])


def test_learning_a_ddl_written_drops_its_arrivals(sink0: Harness) -> None:
    sink0.deliver("arrive", {"stream": 1, "pairs": [[0, 3]]})
    assert (0, 3) in sink0.barrier.arrived
    sink0.deliver("written", {"stream": 2, "pairs": [[0, 3]]})
    assert not sink0.barrier.arrived


@pytest.mark.parametrize(
    "op,body",
    [
        ("arrive", "not a map"),
        ("arrive", {"stream": 1, "pairs": [[0]]}),
        ("arrive", {"stream": 1, "pairs": [[0, 1]]}),  # sink 0 is not the writer of (0, 1)
        ("arrive", {"stream": 7, "pairs": [[0, 3]]}),
        ("written", {"stream": "x", "pairs": []}),
        ("hello", {"stream": 1, "written": [1]}),
    ],
)
def test_a_malformed_message_is_dropped_and_counted(sink0: Harness, op: str, body: Any) -> None:
    sink0.deliver(op, body)
    assert sink0.barrier.stats["malformed"] == 1
    assert not sink0.op.done and sink0.ctx.failed is None
    assert sink0.barrier.take() == ([], [])
