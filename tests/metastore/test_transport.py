"""The replicas' transport: several Raft messages in one ZeroMQ message, in order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from zdf.metastore.raft.messages import Append, Applied, Message
from zdf.metastore.raft.transport import MAX_FRAMES_PER_MESSAGE, PeerTransport, frame
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import close_socket, free_port, make_socket

pytestmark = pytest.mark.timeout(30)


Pair = tuple[Reactor, PeerTransport, list[tuple[str, Message]], str]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Replica ``a`` sending to replica ``b``; ``b``'s messages land in the list."""
    reactor = Reactor()
    got: list[tuple[str, Message]] = []
    addrs = {"a": f"127.0.0.1:{free_port()}", "b": f"127.0.0.1:{free_port()}"}
    a = PeerTransport(reactor, "a", addrs["a"], {"b": addrs["b"]}, lambda *_: None)
    b = PeerTransport(reactor, "b", addrs["b"], {"a": addrs["a"]}, lambda s, m: got.append((s, m)))
    try:
        # IMMEDIATE drops messages until connected: send until one gets through.
        hello = Applied(1, b"hello")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            a.send("b", hello)
            reactor.run(until=lambda: bool(got), deadline=time.monotonic() + 0.05)
        assert got, "the peers never connected"
        got.clear()
        yield reactor, a, got, addrs["b"]
    finally:
        a.close()
        b.close()
        reactor.close()


def _append(commit: int) -> Append:
    return Append(3, 7, 3, ((3, b"entry"),), commit, 11, "127.0.0.1:1")


def _wait(reactor: Reactor, got: list[tuple[str, Message]], count: int) -> None:
    reactor.run(until=lambda: len(got) >= count, deadline=time.monotonic() + 5)
    assert len(got) >= count, got


def test_frames_sent_before_a_message_arrive_first_and_in_order(pair: Pair) -> None:
    reactor, a, got, _ = pair
    hints = [frame(Applied(3, b"first")), frame(Applied(3, b"second"))]
    a.send("b", _append(8), before=hints)
    _wait(reactor, got, 3)
    assert got == [
        ("a", Applied(3, b"first")),
        ("a", Applied(3, b"second")),
        ("a", _append(8)),
    ]


def test_a_malformed_frame_is_refused_alone(pair: Pair) -> None:
    reactor, a, got, _ = pair
    a.send("b", _append(8), before=[frame(Applied(3, b"ok")), b"\xc1garbage"])
    _wait(reactor, got, 2)
    assert got == [("a", Applied(3, b"ok")), ("a", _append(8))]


def test_a_sender_keeps_a_bundle_within_the_frame_limit(pair: Pair) -> None:
    reactor, a, got, _ = pair
    hints = [frame(Applied(3, b"%d" % i)) for i in range(MAX_FRAMES_PER_MESSAGE + 5)]
    a.send("b", _append(8), before=hints)
    _wait(reactor, got, MAX_FRAMES_PER_MESSAGE)
    assert len(got) == MAX_FRAMES_PER_MESSAGE  # the oldest frames went
    assert got[0] == ("a", Applied(3, b"6")) and got[-1] == ("a", _append(8))


def test_a_bundle_above_the_frame_limit_is_refused_whole(pair: Pair) -> None:
    reactor, _, got, b_addr = pair
    rogue = make_socket(zmq.DEALER, connect=f"tcp://{b_addr}", identity=b"rogue")
    try:
        rogue.send_multipart([frame(Applied(3, b"no"))] * (MAX_FRAMES_PER_MESSAGE + 1))
        # At the limit: read. Messages on one connection keep their order, so had
        # the first one been read, its frames would be the first ones here.
        rogue.send_multipart([frame(Applied(3, b"yes"))] * MAX_FRAMES_PER_MESSAGE)
        _wait(reactor, got, MAX_FRAMES_PER_MESSAGE)
        assert got == [("rogue", Applied(3, b"yes"))] * MAX_FRAMES_PER_MESSAGE
    finally:
        close_socket(rogue)
