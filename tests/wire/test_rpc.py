"""The Channel/RpcClient pair over real sockets on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from zdf.errors import ProtocolError, RemoteError, Timeout, ZdfError
from zdf.wire import DEFER, Call, Channel, Reactor, RpcClient, make_socket
from zdf.wire.codec import PROTOCOL_VERSION, Kind, decode, encode, packb
from zdf.wire.sockets import free_port


class Server:
    def __init__(self) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.reactor = Reactor()
        self.deferred: list[Call] = []
        handlers = {
            "echo": lambda call: call.body,
            "crash": lambda call: 1 / 0,
            "refuse": self.refuse,
            "later": self.later,
            "release": self.release,
        }
        self.sock = make_socket(zmq.ROUTER, bind=self.addr, max_message_bytes=4096)
        self.channel = Channel(self.reactor, self.sock, handlers)
        self.thread = threading.Thread(target=self.reactor.run, daemon=True)

    @staticmethod
    def refuse(call: Call) -> Any:
        raise ZdfError("not today", reason="test")

    def later(self, call: Call) -> Any:
        self.deferred.append(call)
        return DEFER

    def release(self, call: Call) -> Any:
        for waiting in self.deferred:
            waiting.reply("released")
        self.deferred.clear()
        return len(self.deferred)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.reactor.stop()
    srv.thread.join(5)
    srv.channel.close()


@pytest.fixture
def client(server: Server) -> Iterator[RpcClient]:
    with RpcClient(server.addr, timeout=2.0) as c:
        yield c


def test_echo_and_errors(client: RpcClient) -> None:
    assert client.call("echo", {"a": [1, b"x"]}) == {"a": [1, b"x"]}
    with pytest.raises(RemoteError, match="ZeroDivisionError"):
        client.call("crash")
    with pytest.raises(ZdfError, match="not today") as info:
        client.call("refuse")
    assert info.value.data == {"reason": "test"}
    with pytest.raises(ProtocolError, match="unknown operation"):
        client.call("no-such-op")


def test_deferred_reply(server: Server, client: RpcClient) -> None:
    other = RpcClient(server.addr, timeout=2.0)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(other.call("later")))
    waiter.start()
    deadline = 100
    while not server.deferred and deadline:
        client.call("echo", 0)
        deadline -= 1
    client.call("release")
    waiter.join(5)
    other.close()
    assert result == ["released"]


def test_timeout_when_nobody_answers() -> None:
    with RpcClient(f"127.0.0.1:{free_port()}", timeout=0.3) as c, pytest.raises(Timeout):
        c.call("echo", 1)


def raw_dealer(addr: str) -> zmq.Socket[bytes]:
    return make_socket(zmq.DEALER, connect=addr)


@pytest.mark.parametrize(
    "frames",
    [
        [b"\xc1garbage"],
        [packb({"v": PROTOCOL_VERSION + 1, "k": "req", "op": "echo", "rid": 1, "b": 1})],
        [packb("just a string")],
        [packb({"v": PROTOCOL_VERSION, "k": "req", "op": 42, "rid": 1})],
    ],
)
def test_bad_frames_get_an_error_and_the_server_lives(
    server: Server, client: RpcClient, frames: list[bytes]
) -> None:
    sock = raw_dealer(server.addr)
    try:
        sock.send_multipart(frames)
        assert sock.poll(2000), "no error reply"
        msg = decode(sock.recv_multipart()[0])
        assert msg.kind is Kind.ERROR and msg.body["type"] == "ProtocolError"
    finally:
        sock.close(0)
    assert client.call("echo", "still here") == "still here"
    assert server.channel.stats["malformed"] >= 1


def test_oversized_message_is_dropped(server: Server, client: RpcClient) -> None:
    sock = raw_dealer(server.addr)
    try:
        sock.send_multipart([encode(Kind.REQUEST, "echo", 1, b"x" * 100_000)])
        assert not sock.poll(300), "an oversized message must not be answered"
    finally:
        sock.close(0)
    assert client.call("echo", "alive") == "alive"


def test_reactor_channel_request_with_callback(server: Server) -> None:
    reactor = Reactor()
    channel = Channel(reactor, make_socket(zmq.DEALER, connect=server.addr), {})
    got: list[Any] = []
    channel.request("echo", 5, callback=lambda r, e: got.append((r, e)))
    channel.request("crash", None, callback=lambda r, e: got.append((r, type(e).__name__)))
    reactor.run(until=lambda: len(got) == 2, deadline=_deadline(5))
    channel.close()
    assert got == [(5, None), (None, "RemoteError")]


def test_reactor_request_times_out() -> None:
    reactor = Reactor()
    channel = Channel(reactor, make_socket(zmq.DEALER, connect=f"127.0.0.1:{free_port()}"), {})
    got: list[Any] = []
    channel.request("echo", 5, timeout=0.05, callback=lambda r, e: got.append(e))
    reactor.run(until=lambda: bool(got), deadline=_deadline(5))
    channel.close()
    assert isinstance(got[0], Timeout)


def _deadline(seconds: float) -> float:
    import time

    return time.monotonic() + seconds


def test_on_drained_follows_every_read_of_the_waiting_messages() -> None:
    reactor = Reactor()
    addr = f"127.0.0.1:{free_port()}"
    seen: list[str] = []

    def note(call: Call) -> None:
        seen.append(f"call {call.body}")

    router = Channel(reactor, make_socket(zmq.ROUTER, bind=addr), {"note": note})
    router.on_drained = lambda: seen.append("drained")
    sender = raw_dealer(addr)
    try:
        for n in range(3):
            sender.send(encode(Kind.EVENT, "note", 0, n))
        reactor.run(until=lambda: seen[-1:] == ["drained"] and len(seen) > 3, deadline=_deadline(5))
    finally:
        sender.close(0)
        router.close()
    # Every message read is followed, at the end of its batch, by the hook.
    assert [s for s in seen if s != "drained"] == ["call 0", "call 1", "call 2"]
    assert seen[0] == "call 0" and seen[-1] == "drained"
