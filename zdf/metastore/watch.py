"""Client side of a watch: a stream of events that survives reconnects.

Theory of operation: a ``Watch`` owns one DEALER socket. It subscribes with a
fresh random watch id and the revision to start from; the server replies,
then streams ``watch_event`` messages, each saying "you have everything up to
revision R" and numbered by ``seq``. The watch remembers the next revision it
needs. When the server falls silent for three heartbeat intervals (a crash,
a restart, a lost connection) or a ``seq`` is skipped, it subscribes again --
new id, same socket, start at that next revision -- and ignores anything
still arriving for the old id. So after any number of reconnects the caller
sees every event exactly once and in order, or a ``CompactedError`` if the
history it needs is gone.

Two ways to use it: iterate (``for event in watch``, or ``watch.events(1.0)``
which stops after a second of silence), or, in a reactor, register
``watch.socket`` as a reader and call ``watch.poll()`` both when it is
readable and every ``watch.check_interval`` seconds (the liveness check).
A ``Watch`` is for one thread.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import zmq

from zdf.errors import Timeout, ZdfError, from_wire
from zdf.metastore.kv import Event
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.sockets import close_socket, endpoint, make_socket

DEFAULT_PROGRESS_INTERVAL = 0.5
LIVENESS = 3
"""Heartbeat intervals of silence after which the watch subscribes again."""


class Watch:
    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: bytes,
        start_revision: int = 0,
        *,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("a watch needs at least one endpoint")
        self.prefix = prefix
        self.timeout = timeout
        self.resubscribes = 0
        self._endpoints = list(endpoints)
        self._index = 0
        self._sock = make_socket(zmq.DEALER, connect=self._endpoints[0], server_role="metastore")
        self._rids = itertools.count(1)
        self._buffer: deque[Event] = deque()
        self._next_revision = start_revision
        self._watch_id = 0
        self._seq = 0
        self._pending_rid: int | None = None
        self._sent_at = 0.0
        self._last_heard = time.monotonic()
        self._interval = DEFAULT_PROGRESS_INTERVAL
        self._error: ZdfError | None = None
        self.closed = False
        try:
            self._subscribe()
            self._await_subscribed(time.monotonic() + timeout)
        except BaseException:
            self.close()
            raise

    # -- public --------------------------------------------------------------------
    @property
    def socket(self) -> zmq.Socket[bytes]:
        """Register this with a poller/reactor; it stays the same across reconnects."""
        return self._sock

    @property
    def next_revision(self) -> int:
        """Every event before this revision has been received."""
        return self._next_revision

    @property
    def check_interval(self) -> float:
        """How often a reactor must call ``poll()`` even when the socket is quiet."""
        return self._interval

    @property
    def silence(self) -> float:
        """Seconds since the server was last heard from (infinite while subscribing).

        The server reports progress every ``check_interval``, so a few of those
        without a word mean the watch is probably broken before the liveness
        check has given up on it."""
        if self._pending_rid is not None:
            return math.inf
        return time.monotonic() - self._last_heard

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """The events received so far, waiting up to ``timeout`` for the first one."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            self._drain()
            self._check_liveness()
            remaining = deadline - time.monotonic()
            if self._buffer or self._error is not None or remaining <= 0:
                break
            self._sock.poll(max(1, int(min(remaining, self._interval) * 1000)), zmq.POLLIN)
        if not self._buffer and self._error is not None:
            error, self._error = self._error, None
            raise error
        events = list(self._buffer)
        self._buffer.clear()
        return events

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` (None: forever); None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer and not self.closed:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            self._buffer.extend(self.poll(wait))
        return self._buffer.popleft() if self._buffer else None

    def events(self, timeout: float) -> Iterator[Event]:
        """Yield events until none arrives for ``timeout`` seconds."""
        while (event := self.get(timeout)) is not None:
            yield event

    def __iter__(self) -> Iterator[Event]:
        """Yield events forever (until ``close()``); blocks while there are none."""
        while not self.closed:
            event = self.get(None)
            if event is not None:
                yield event

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watch_id and not self._sock.closed:
            self._send("watch_cancel", {"watch_id": self._watch_id})
        close_socket(self._sock)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- subscribing ---------------------------------------------------------------
    def _send(self, op: str, body: dict[str, Any]) -> int:
        rid = next(self._rids)
        with contextlib.suppress(zmq.ZMQError):  # the liveness check subscribes again
            self._sock.send(encode(Kind.REQUEST, op, rid, body), zmq.NOBLOCK)
        return rid

    def _subscribe(self) -> None:
        if self._watch_id:
            self._send("watch_cancel", {"watch_id": self._watch_id})
        self._watch_id = secrets.randbits(62) + 1
        self._seq = 0
        body = {
            "prefix": self.prefix,
            "start_revision": self._next_revision,
            "watch_id": self._watch_id,
        }
        self._pending_rid = self._send("watch", body)
        self._sent_at = time.monotonic()

    def _await_subscribed(self, deadline: float) -> None:
        while self._pending_rid is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"watch on {self._endpoints[self._index]}: no reply in time")
            if self._sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                self._drain()
            if self._error is not None:
                error, self._error = self._error, None
                raise error

    def _rotate(self) -> None:
        if len(self._endpoints) > 1:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disconnect(endpoint(self._endpoints[self._index]))
            self._index = (self._index + 1) % len(self._endpoints)
            self._sock.connect(endpoint(self._endpoints[self._index]))

    def _check_liveness(self) -> None:
        now = time.monotonic()
        limit = self._interval * LIVENESS
        if self._pending_rid is not None:
            if now - self._sent_at > limit:
                self._rotate()
                self._subscribe()
        elif now - self._last_heard > limit:
            self.resubscribes += 1
            self._rotate()
            self._subscribe()

    # -- receiving -----------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            try:
                msg = decode(frame)
            except ZdfError:
                continue
            body = msg.body if isinstance(msg.body, dict) else {}
            if msg.kind in (Kind.REPLY, Kind.ERROR):
                if msg.rid == self._pending_rid:
                    self._on_subscribed(msg.kind, body)
            elif msg.op == "watch_event" and body.get("watch_id") == self._watch_id:
                self._on_events(body)
            elif msg.op == "watch_canceled" and body.get("watch_id") == self._watch_id:
                self._error = from_wire(body.get("error"))
                self._watch_id = 0

    def _on_subscribed(self, kind: Kind, body: dict[str, Any]) -> None:
        self._pending_rid = None
        self._last_heard = time.monotonic()
        if kind is Kind.ERROR:
            self._error = from_wire(body)
            self._watch_id = 0
            return
        self._next_revision = int(body.get("start_revision", self._next_revision))
        interval = body.get("progress_interval")
        if isinstance(interval, int | float) and interval > 0:
            self._interval = float(interval)

    def _on_events(self, body: dict[str, Any]) -> None:
        if self._pending_rid is not None:
            return
        if body.get("seq") != self._seq + 1:
            self.resubscribes += 1
            self._subscribe()  # a message went missing: take it again from history
            return
        self._seq += 1
        self._last_heard = time.monotonic()
        for raw in body.get("events", []):
            event = Event.from_wire(raw)
            if event.revision >= self._next_revision:
                self._buffer.append(event)
        through = body.get("revision")
        if isinstance(through, int):
            self._next_revision = max(self._next_revision, through + 1)
