"""Data pipes: credits bound what is in flight, positions resume, end of stream is acked."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from zdf.records import RECORD_DTYPE
from zdf.runtime import hub
from zdf.runtime.pipe import InPort, OutPort
from zdf.wire import Reactor, inproc, make_socket
from zdf.wire.codec import Kind, encode

pytestmark = pytest.mark.timeout(20)


def rows(n: int, start: int = 0) -> np.ndarray:
    out = np.zeros(n, RECORD_DTYPE)
    out["pk"] = np.arange(start, start + n)
    return out


class Source:
    """An owner that sends ``total`` batches of 10 rows from whatever position it is asked."""

    def __init__(self, reactor: Reactor, total: int, where: str = "tcp://127.0.0.1:*") -> None:
        self.total = total
        self.next = 0
        self.subscribed_from: list[int] = []
        self.eos_acked = False
        self.port = OutPort(
            reactor,
            where,
            1,
            on_credit=self.send,
            on_subscribe=self.on_subscribe,
            on_eos_acked=self.on_eos_acked,
        )

    def on_subscribe(self, ch: int, start: int) -> None:
        self.subscribed_from.append(start)
        self.next = start

    def send(self, ch: int) -> None:
        while self.port.credit(0) > 0 and self.next < self.total:
            self.port.send(0, rows(10, self.next * 10), self.next, self.next + 1)
            self.next += 1
        if self.next == self.total and not self.port.eos_sent(0):
            self.port.send_eos(0, self.total)

    def on_eos_acked(self, ch: int) -> None:
        self.eos_acked = True


class Sink:
    def __init__(self, reactor: Reactor, *, window: int, start: int = 0, auto_ack: bool = True):
        self.batches: list[tuple[int, np.ndarray]] = []
        self.ended_at: int | None = None
        self.auto_ack = auto_ack
        self.port = InPort(
            reactor, 0, on_batch=self.on_batch, on_eos=self.on_eos, window=window, start=start
        )

    def on_batch(self, batch: np.ndarray, pos: int, next_pos: int) -> None:
        self.batches.append((pos, batch.copy()))
        if self.auto_ack:
            self.port.ack()

    def on_eos(self, pos: int) -> None:
        self.ended_at = pos
        self.port.ack_eos()


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    yield Reactor()


def run_until(reactor: Reactor, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    reactor.run(until=cond, deadline=time.monotonic() + timeout)
    assert cond(), "condition not reached before the deadline"


def settle(reactor: Reactor, turns: int = 20) -> None:
    """Let in-flight messages land (bounded turns, no sleeping as synchronisation)."""
    for _ in range(turns):
        reactor.run_once(0.01)


def test_stream_end_to_end_with_acknowledged_end_of_stream(
    reactor: Reactor, no_leaks: None
) -> None:
    src = Source(reactor, total=50)
    dst = Sink(reactor, window=4)
    dst.port.connect(src.port.addr)
    try:
        run_until(reactor, lambda: src.eos_acked)
        assert dst.ended_at == 50
        assert [pos for pos, _ in dst.batches] == list(range(50))
        pks = np.concatenate([b["pk"] for _, b in dst.batches])
        assert (pks == np.arange(500)).all()
    finally:
        dst.port.close()
        src.port.close()


class Keeper(Sink):
    """A receiver that keeps the batches it is given as they are (no copy)."""

    def on_batch(self, batch: np.ndarray, pos: int, next_pos: int) -> None:
        self.batches.append((pos, batch))
        self.port.ack()


@pytest.mark.parametrize("same_process", [True, False])
def test_batches_arrive_read_only_by_either_route(
    reactor: Reactor, no_leaks: None, same_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = Source(reactor, total=5)
    url = hub.split(src.port.addr)[0]  # the address of the process's shared socket
    if not same_process:  # as a receiver in another process sees it: no alias
        monkeypatch.setattr(inproc, "route", lambda addr: addr)
    assert (inproc.route(url) != url) is same_process
    dst = Keeper(reactor, window=2)
    dst.port.connect(src.port.addr)
    try:
        run_until(reactor, lambda: src.eos_acked)
        assert [int(b["pk"][0]) for _, b in dst.batches] == [0, 10, 20, 30, 40]
        for _, batch in dst.batches:
            with pytest.raises(ValueError):
                batch["pk"][0] = -1  # in this process it would be the sender's memory
    finally:
        dst.port.close()
        src.port.close()
    assert inproc.route(url) == url  # closed (its last port): no alias left


def test_credits_bound_what_is_in_flight(reactor: Reactor, no_leaks: None) -> None:
    src = Source(reactor, total=100)
    dst = Sink(reactor, window=4, auto_ack=False)
    dst.port.connect(src.port.addr)
    try:
        run_until(reactor, lambda: len(dst.batches) == 4)
        settle(reactor)
        assert len(dst.batches) == 4 and src.next == 4  # the sender stopped at the window
        dst.port.ack(2)
        run_until(reactor, lambda: len(dst.batches) == 6)
        settle(reactor)
        assert len(dst.batches) == 6 and src.port.in_flight(0) == 4
    finally:
        dst.port.close()
        src.port.close()


def test_a_new_receiver_resumes_from_its_position(reactor: Reactor, no_leaks: None) -> None:
    src = Source(reactor, total=20)
    first = Sink(reactor, window=2, auto_ack=False)
    first.port.connect(src.port.addr)
    try:
        run_until(reactor, lambda: len(first.batches) == 2)
        first.port.ack(2)
        position = first.port.pos
        first.port.close()
        second = Sink(reactor, window=8, start=position)
        second.port.connect(src.port.addr)
        run_until(reactor, lambda: src.eos_acked)
        assert src.subscribed_from == [0, 2]
        assert [pos for pos, _ in second.batches] == list(range(2, 20))
        second.port.close()
    finally:
        src.port.close()


def test_bad_messages_are_dropped_and_counted(reactor: Reactor, no_leaks: None) -> None:
    src = Source(reactor, total=3)
    url, port = hub.split(src.port.addr)
    rogue = make_socket(zmq.DEALER, connect=url)
    try:
        rogue.send_multipart([port, b"1", b"\xc1 not msgpack"])
        sub = encode(Kind.EVENT, "sub", 0, {"ch": 7, "sid": 1, "from": 0, "window": 1})
        rogue.send_multipart([port, b"1", sub])
        rogue.send_multipart([port, b"1", encode(Kind.EVENT, "nonsense", 0, {})])
        rogue.send(b"one frame")  # not even addressed to a port: the hub drops it
        rogue.send_multipart([b"no such port", b"1", sub])
        run_until(reactor, lambda: src.port.stats["malformed"] == 3)
        run_until(reactor, lambda: src.port.hub.stats["malformed"] == 1)
        run_until(reactor, lambda: src.port.hub.stats["unknown"] == 1)
        dst = Sink(reactor, window=2)
        dst.port.connect(src.port.addr)
        run_until(reactor, lambda: src.eos_acked)  # the port still serves well-behaved peers
        dst.port.close()
    finally:
        rogue.close(0)
        src.port.close()


def test_a_gap_makes_the_receiver_subscribe_again(reactor: Reactor, no_leaks: None) -> None:
    server = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    addr = server.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    dst = Sink(reactor, window=4)
    dst.port.connect(f"{addr}#7")
    try:
        assert server.poll(5000)
        peer, port, pipe, _ = server.recv_multipart()
        assert port == b"7"
        bad = encode(Kind.EVENT, "batch", 0, {"sid": 1, "pos": 5, "next": 6})
        server.send_multipart([peer, pipe, bad, rows(3).tobytes()])
        run_until(reactor, lambda: dst.port.stats["subscribes"] == 2)
        assert dst.batches == []
        assert server.poll(5000)
        _, _, _, again = server.recv_multipart()
        assert b"sub" in again
    finally:
        dst.port.close()
        server.close(0)


def test_a_zombie_subscriber_cannot_take_the_channel_back(reactor: Reactor, no_leaks: None) -> None:
    """Subscriptions carry the attempt: an older attempt's (re)subscription is ignored."""
    src = Source(reactor, total=1000)
    new = Sink(reactor, window=2, auto_ack=False)
    new.port.attempt = 2
    zombie = Sink(reactor, window=2, auto_ack=False)
    zombie.port.attempt = 1
    try:
        new.port.connect(src.port.addr)
        run_until(reactor, lambda: len(new.batches) == 2)
        zombie.port.connect(src.port.addr)  # e.g. a hung executor's worker resubscribing
        run_until(reactor, lambda: src.port.stats["fenced"] == 1)
        new.port.ack(2)
        run_until(reactor, lambda: len(new.batches) == 4)
        assert zombie.batches == [] and src.subscribed_from == [0]
    finally:
        for port in (new.port, zombie.port, src.port):
            port.close()


def test_restart_forgets_unacked_batches_and_replays(reactor: Reactor, no_leaks: None) -> None:
    """A replaying stage drops what it holds: its credit must not leak with it."""
    src = Source(reactor, total=100)
    dst = Sink(reactor, window=3, auto_ack=False)
    dst.port.active = False
    try:
        dst.port.connect(src.port.addr)
        settle(reactor)
        assert src.subscribed_from == []  # inactive: connected, not subscribed
        dst.port.restart(5)
        run_until(reactor, lambda: len(dst.batches) == 3)
        dst.batches.clear()  # dropped without acks, as a replaying stage does
        dst.port.restart(2)
        dst.auto_ack = True
        run_until(reactor, lambda: dst.ended_at == 100)
        assert [pos for pos, _ in dst.batches] == list(range(2, 100))
        assert src.subscribed_from == [5, 2]
    finally:
        dst.port.close()
        src.port.close()


def test_an_absurd_attempt_cannot_fence_out_the_real_subscriber(
    reactor: Reactor, no_leaks: None
) -> None:
    """A subscription claiming attempt 2**62 is refused: it would fence out every real one."""
    src = Source(reactor, total=1000)
    hostile = Sink(reactor, window=2, auto_ack=False)
    hostile.port.attempt = 2**62
    real = Sink(reactor, window=2, auto_ack=False)
    real.port.attempt = 2
    try:
        hostile.port.connect(src.port.addr)
        run_until(reactor, lambda: src.port.stats["malformed"] >= 1)
        real.port.connect(src.port.addr)
        run_until(reactor, lambda: len(real.batches) == 2)
        assert hostile.batches == []
    finally:
        for port in (real.port, hostile.port, src.port):
            port.close()
