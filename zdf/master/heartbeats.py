"""Heartbeats over PUB/SUB and the socket events that beat them to it.

The master publishes its own heartbeat (name, epoch, sequence) on a PUB socket
that executors subscribe to, and subscribes to every executor's PUB. A monitor
on that SUB socket turns connection events into liveness input: a dropped
connection makes the executor suspect at once, a refused reconnect (the process
is gone) makes it dead at once — tens of milliseconds after a kill -9, instead
of a whole keepalive TTL.

A heartbeat is one frame: the topic prefix followed by a msgpack body. It is
never multipart on purpose: libzmq 4.3 can abort a SUB socket that reads the
second part of a message whose connection was just reset (a ZMTP heartbeat
timeout or a reconnect "hiccups" the pipe under the reader), so a frozen-then-
resumed master must never find half a heartbeat in its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from zdf.errors import ProtocolError
from zdf.protocol import HEARTBEAT_TOPIC
from zdf.wire.codec import packb, unpackb
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import close_socket, endpoint, make_socket

log = logging.getLogger(__name__)

RECONNECT_IVL_MS = 10


class HeartbeatPublisher:
    def __init__(
        self, bind: str, sender_id: str, epoch: int, allow: frozenset[str] | None = None
    ) -> None:
        self.sock = make_socket(zmq.PUB, bind=bind, sndhwm=100, allow=allow)
        self.sender_id = sender_id
        self.epoch = epoch
        self.seq = 0

    def beat(self, extra: dict[str, object] | None = None) -> None:
        self.seq += 1
        body = {"id": self.sender_id, "epoch": self.epoch, "seq": self.seq, **(extra or {})}
        try:
            self.sock.send(HEARTBEAT_TOPIC + packb(body), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # no subscriber yet, or shutting down: a heartbeat is never worth blocking for

    def close(self) -> None:
        close_socket(self.sock)


class HeartbeatSubscriber:
    """A SUB socket connected to many publishers, with connection events per endpoint.

    ``on_beat(body)`` is called for every well-formed heartbeat; ``on_down(addr)``
    when the connection to ``addr`` drops and ``on_gone(addr)`` when its reconnect
    is refused.
    """

    def __init__(
        self,
        reactor: Reactor,
        on_beat: Callable[[dict[str, object]], None],
        on_down: Callable[[str], None] | None = None,
        on_gone: Callable[[str], None] | None = None,
        heartbeat_ms: int | None = None,
        server_role: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.sock = make_socket(
            zmq.SUB, subscribe=HEARTBEAT_TOPIC, heartbeat_ms=heartbeat_ms, server_role=server_role
        )
        self.sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        self.on_beat = on_beat
        self.on_down = on_down
        self.on_gone = on_gone
        self.dropped = 0
        self._addrs: dict[bytes, str] = {}
        self._down: set[str] = set()
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )
        reactor.add_reader(self.sock, self._on_readable)
        reactor.add_reader(self.monitor, self._on_monitor)

    def connect(self, addr: str) -> None:
        url = endpoint(addr)
        if url.encode() in self._addrs:
            return
        self._addrs[url.encode()] = addr
        self._down.discard(addr)
        self.sock.connect(url)

    def disconnect(self, addr: str) -> None:
        url = endpoint(addr)
        if self._addrs.pop(url.encode(), None) is not None:
            self._down.discard(addr)
            try:
                self.sock.disconnect(url)
            except zmq.ZMQError:
                pass

    def close(self) -> None:
        self.reactor.remove_reader(self.sock)
        self.reactor.remove_reader(self.monitor)
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        close_socket(self.monitor)
        close_socket(self.sock)

    def _on_readable(self) -> None:
        for _ in range(256):
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if self.sock.rcvmore:
                    self._skip_rest()
                    raise ProtocolError("a heartbeat is one frame")
                body = unpackb(frame[len(HEARTBEAT_TOPIC) :])
                if not isinstance(body, dict) or not isinstance(body.get("id"), str):
                    raise ProtocolError("heartbeat without an id")
            except ProtocolError:
                self.dropped += 1
                continue
            self.on_beat(body)

    def _skip_rest(self) -> None:
        while self.sock.rcvmore:
            self.sock.recv(zmq.NOBLOCK)

    def _on_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            addr = self._addrs.get(bytes(event.get("endpoint", b"")))
            if addr is None:
                continue
            kind = event["event"]
            if kind == zmq.EVENT_CONNECTED:
                self._down.discard(addr)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._down.add(addr)
                if self.on_down is not None:
                    self.on_down(addr)
            elif kind == zmq.EVENT_CLOSED and addr in self._down and self.on_gone is not None:
                self.on_gone(addr)
