"""The master's ROUTER under a burst to one peer that does not read for a while
(a paused executor): nothing is lost silently."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from zdf.errors import ZdfError
from zdf.master.router import master_router
from zdf.wire import Reactor, make_socket
from zdf.wire.rpc import Channel

pytestmark = pytest.mark.timeout(60)

QUIET = 1.0
BODY = "x" * 16_000  # big enough that a few thousand fill the kernel's socket buffers


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    yield Reactor()


def burst(router: zmq.Socket[bytes], reactor: Reactor, count: int) -> tuple[int, Channel]:
    """``count`` events to a peer that reads only after all were sent; how many came."""
    addr = router.getsockopt_string(zmq.LAST_ENDPOINT)
    channel = Channel(reactor, router, {"hello": lambda call: None}, name="master")
    peer = make_socket(zmq.DEALER, connect=addr, rcvhwm=10)
    try:
        peer.send_multipart([b"", b"hi"])  # anything: the ROUTER learns the peer's id
        assert router.poll(5000)
        identity = router.recv_multipart()[0]
        for i in range(count):
            channel.notify("update", {"n": i, "pad": BODY}, peer=identity)
        # Everything that was queued arrives now: read until all that were not refused
        # came, or (a silent drop) nothing more came for QUIET seconds.
        expect = count - channel.stats["send_dropped"]
        got, deadline = 0, time.monotonic() + 20
        while got < expect and time.monotonic() < deadline and peer.poll(int(QUIET * 1000)):
            peer.recv_multipart()
            got += 1
        return got, channel
    finally:
        peer.close(0)


def test_a_default_router_loses_a_burst_without_a_word(reactor: Reactor) -> None:
    """What the master's ROUTER did before: libzmq's defaults drop beyond the mark."""
    router = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    try:
        got, channel = burst(router, reactor, 5_000)
        assert got < 5_000, "the burst fit: make it bigger"
        assert channel.stats["send_dropped"] == channel.stats["send_failed"] == 0  # silent
    finally:
        router.close(0)


def test_the_master_router_delivers_the_burst_whole(reactor: Reactor) -> None:
    router = master_router("tcp://127.0.0.1:*")
    try:
        got, channel = burst(router, reactor, 5_000)
        assert got == 5_000 and channel.stats["send_dropped"] == 0
    finally:
        router.close(0)


def test_beyond_its_bound_every_drop_is_counted(reactor: Reactor) -> None:
    """Past its high-water mark the master's ROUTER refuses, visibly: sent = got + dropped."""
    router = master_router("tcp://127.0.0.1:*", sndhwm=200)
    try:
        got, channel = burst(router, reactor, 5_000)
        dropped = channel.stats["send_dropped"]
        assert dropped > 0 and got + dropped == 5_000
    finally:
        router.close(0)


def test_a_request_it_cannot_send_fails_at_once_marked_unsent(reactor: Reactor) -> None:
    """The master resends a start command marked ``unsent`` (the peer never saw it);
    before, one to a full queue waited for its timeout and its task for ever."""
    router = master_router("tcp://127.0.0.1:*")
    channel = Channel(reactor, router, {}, name="master")
    answers: list[object] = []
    try:
        channel.request(
            "start_task", {}, peer=b"gone", timeout=30, callback=lambda r, e: answers.append(e)
        )
        assert len(answers) == 1, "answered at once, not after the timeout"
        error = answers[0]
        assert isinstance(error, ZdfError) and error.data.get("unsent") is True
        assert channel.stats["send_failed"] == 1
    finally:
        channel.close()
