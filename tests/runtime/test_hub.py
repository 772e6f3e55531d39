"""Shared data sockets (zdf.runtime.hub): many pipes ride one socket per peer process."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from runtime.test_pipe import Sink, Source, run_until
from zdf.runtime import hub
from zdf.wire import Reactor

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    yield Reactor()


def open_zmq_sockets() -> int:
    ctx = zmq.Context.instance()
    return sum(not s.closed for s in getattr(ctx, "_sockets", ()))


@pytest.mark.parametrize("where", ["tcp://127.0.0.1:*", "ipc"])
def test_many_pipes_share_one_socket_each_way(
    reactor: Reactor, no_leaks: None, where: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """300 ports and 300 pipes, each stream exact: two sockets in all, none after."""
    spec = where if where != "ipc" else f"ipc://{tmp_path_factory.mktemp('hub')}/"
    before = open_zmq_sockets()
    sources = [Source(reactor, total=3, where=spec) for _ in range(300)]
    sinks = [Sink(reactor, window=2) for _ in sources]
    try:
        for src, dst in zip(sources, sinks, strict=True):
            dst.port.connect(src.port.addr)
        assert len({hub.split(s.port.addr)[0] for s in sources}) == 1
        assert open_zmq_sockets() - before == 2  # one ROUTER, one DEALER
        run_until(reactor, lambda: all(s.eos_acked for s in sources), timeout=20)
        for dst in sinks:
            assert dst.ended_at == 3 and [p for p, _ in dst.batches] == [0, 1, 2]
            pks = np.concatenate([b["pk"] for _, b in dst.batches])
            assert (pks == np.arange(30)).all()
    finally:
        for dst in sinks:
            dst.port.close()
        for src in sources:
            src.port.close()
    assert open_zmq_sockets() == before


def test_each_reactor_has_its_own_hub(no_leaks: None) -> None:
    one, two = Reactor(), Reactor()
    a, b = Source(one, total=1), Source(two, total=1)
    try:
        assert a.port.hub is not b.port.hub
        assert hub.split(a.port.addr)[0] != hub.split(b.port.addr)[0]
    finally:
        a.port.close()
        b.port.close()


def test_a_closed_port_drops_its_messages_and_the_others_go_on(
    reactor: Reactor, no_leaks: None
) -> None:
    """Messages for a port that left are counted and dropped; its neighbours are served."""
    gone, kept = Source(reactor, total=1000), Source(reactor, total=20)
    early = Sink(reactor, window=4, auto_ack=False)
    late = Sink(reactor, window=4)
    try:
        early.port.connect(gone.port.addr)
        run_until(reactor, lambda: len(early.batches) == 4)
        gone.port.close()
        early.port.ack(4)  # to a port that is not there any more
        late.port.connect(kept.port.addr)
        run_until(reactor, lambda: kept.eos_acked and kept.port.hub.stats["unknown"] >= 1)
        assert [p for p, _ in late.batches] == list(range(20))
    finally:
        early.port.close()
        late.port.close()
        kept.port.close()
        gone.port.close()


def test_a_restarted_sender_is_found_at_its_new_address(reactor: Reactor, no_leaks: None) -> None:
    """A port re-made (a task restarted in the same process) has a new id: the pipe
    reconnects, subscribes again from its position and gets the rest exactly."""
    first = Source(reactor, total=10)
    dst = Sink(reactor, window=2)
    dst.port.connect(first.port.addr)
    try:
        run_until(reactor, lambda: len(dst.batches) >= 4)
        first.port.close()
        second = Source(reactor, total=10)
        assert second.port.addr != first.port.addr
        position = dst.port.pos
        dst.port.connect(second.port.addr)
        run_until(reactor, lambda: second.eos_acked)
        assert second.subscribed_from == [position]
        assert [p for p, _ in dst.batches] == list(range(10))
        second.port.close()
    finally:
        dst.port.close()
        first.port.close()
