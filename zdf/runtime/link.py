"""A control link from a task to another task of its job (a DEALER ``Channel``).

Data travels on pipes; small control messages (the DDL barrier's arrive/write/
release, a sink's final report) travel on a link. A link follows its peer: it is
created before the peer's address is known, queues what is sent until then, and
when the directory reports a new address (the peer restarted elsewhere) it
opens a fresh socket and calls ``on_connect`` so the owner can introduce itself
again and resend what the peer may have lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import zmq

from zdf.errors import ZdfError
from zdf.wire import inproc
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Channel, Handler, ReplyCallback
from zdf.wire.sockets import make_socket


class PeerLink:
    def __init__(
        self,
        reactor: Reactor,
        handlers: Mapping[str, Handler],
        *,
        on_connect: Callable[[PeerLink], None] | None = None,
        name: str = "link",
        wrap: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.handlers = dict(handlers)
        self.name = name
        self.addr: str | None = None
        self.channel: Channel | None = None
        self.closed = False
        self._on_connect = on_connect
        self._queued: list[tuple[str, Any]] = []
        self._wrap = wrap

    def connect(self, addr: str) -> None:
        if self.closed or addr == self.addr:
            return
        if self.channel is not None:
            self.channel.close()
        self.addr = addr
        sock = make_socket(zmq.DEALER, connect=inproc.route(addr))
        self.channel = Channel(self.reactor, sock, self.handlers, name=self.name)
        if self._wrap is not None:  # one guarded burst per wake-up, so work can be deferred
            self.reactor.add_reader(sock, self._wrap(self.channel._on_readable))
        if self._on_connect is not None:
            self._on_connect(self)
        queued, self._queued = self._queued, []
        for op, body in queued:
            self.channel.notify(op, body)

    def notify(self, op: str, body: Any = None) -> None:
        """A one-way event; queued until the peer's address is known."""
        if self.channel is None:
            self._queued.append((op, body))
        else:
            self.channel.notify(op, body)

    def request(self, op: str, body: Any, callback: ReplyCallback, *, timeout: float = 5.0) -> None:
        if self.channel is None:
            callback(None, ZdfError(f"{self.name}: {op!r} before the peer's address is known"))
            return
        self.channel.request(op, body, timeout=timeout, callback=callback)

    def close(self, linger: float = 0.0) -> None:
        self.closed = True
        if self.channel is not None:
            self.channel.close(linger)
            self.channel = None
