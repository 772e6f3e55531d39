"""Data pipes: credit-based streams of record batches over ROUTER/DEALER.

Theory of operation
-------------------
The *sending* task opens a port (``OutPort``) on its process's shared ROUTER
(``zdf.runtime.hub``) and publishes its address; each *receiving* task opens a
pipe (``InPort``) on its process's shared DEALER to that hub and subscribes to
one channel of the port, naming the position to start from and a window (how
many batches may be in flight unacknowledged). The sender sends only while it has credit,
``window - (sent - acked)``. The receiver acknowledges a batch once its owner has
really consumed it (forwarded, merged or written it), so a slow stage stops its
upstream after ``window`` batches and memory stays bounded along the whole chain.
Acks are cumulative counts, so a lost ack is repaired by the next one; they also
tell the sender "written through here", which the bench job does not need but a
checkpointing sender will.

Positions are integers chosen by the sender (a batch index for a producer, a gtid
for a binlog, a row count for a stream operator). Every batch carries ``pos`` and
``next`` and the receiver checks continuity, so a gap or a stale batch (after a
reconnect) is noticed and answered by subscribing again from the last position
it consumed. That is also how a task restarted elsewhere resumes: it subscribes
from the position in its checkpoint. A receiver whose resume point is not the
sender's batch position (a sink resuming from a gtid behind a syncer that
reorders) passes ``resume``: it is asked for the position at every (re)subscribe.

Fencing: a subscription names the subscriber's *attempt* (its task's placement
number). A channel keeps its highest attempt and ignores subscriptions from
lower ones, so a zombie (a task whose executor was declared dead but still
runs) cannot steal the stream from its replacement.

End of stream is acknowledged by the application: the sender sends ``eos`` after
its last batch and knows the stream was consumed only when ``eos-ack`` comes
back; libzmq may drop in-flight messages when a socket closes, so "sent" never
means "received".

Frames (``env`` is a ``zdf.wire.codec`` event envelope, the only msgpack here;
the hub's routing frames, ``zdf.runtime.hub``, come first)::

    receiver -> sender  [env "sub" {ch, sid, from, window, attempt}]
                        [env "ack" {ch, sid, n}]       n = batches consumed under sid
                        [env "eos-ack" {ch, sid, n}]  everything consumed
    sender -> receiver  [env "batch" {sid, pos, next}, rows]   rows: raw numpy buffer
                        [env "eos" {sid, pos}]

Batches travel zero-copy (``copy=False`` both ways, ``np.frombuffer`` on receipt):
never one message per record. A receiver in the sender's own process connects
over inproc (``zdf.wire.inproc``) and gets the sender's memory: batches are
delivered read-only, and a sender never changes a batch it has sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zmq

from zdf.errors import ProtocolError
from zdf.records import RECORD_DTYPE
from zdf.runtime import hub as hubs
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.reactor import Reactor

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 8
MAX_ATTEMPT = 1 << 20
"""A placement number is counted up from 1; one far beyond would fence out every real one."""
MAX_WINDOW = 1024

BatchCallback = Callable[[np.ndarray, int, int], None]
F = TypeVar("F", bound=Callable[..., None])
Wrap = Callable[[Callable[[list[Any]], None]], Callable[[list[Any]], None]]
"""The owner's guard around what a hub hands a port or pipe in one wake-up."""


def _same(fn: F) -> F:
    return fn


def _now(fn: Callable[[], None]) -> None:
    fn()


def _int(body: dict[str, Any], name: str, low: int = 0, high: int = 2**62) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"field {name!r} must be an integer from {low} to {high}")
    return value


def _body(frame: bytes) -> tuple[str, dict[str, Any]]:
    msg = decode(frame)
    if not isinstance(msg.body, dict):
        raise ProtocolError(f"{msg.op!r}: body is not a map")
    return msg.op, msg.body


@dataclass(slots=True)
class _Subscriber:
    peer: bytes  # the subscriber's dialer (its hub routing id)
    pipe: bytes  # its pipe on that dialer
    sid: int
    window: int
    sent: int = 0
    acked: int = 0
    eos_sent: bool = False
    eos_acked: bool = False

    @property
    def credit(self) -> int:
        return self.window - (self.sent - self.acked)


class OutPort:
    """The sending end: a bound ROUTER serving ``channels`` subscribers.

    The owner is told ``on_subscribe(ch, from_pos)`` when a receiver (re)subscribes
    (it must continue from ``from_pos``), ``on_credit(ch)`` whenever it may send
    more, and ``on_eos_acked(ch)`` when the receiver confirmed the end of stream.
    """

    def __init__(
        self,
        reactor: Reactor,
        addr: str,
        channels: int,
        *,
        on_credit: Callable[[int], None],
        on_subscribe: Callable[[int, int], None] | None = None,
        on_eos_acked: Callable[[int], None] | None = None,
        name: str = "out",
        wrap: Wrap = _same,
    ) -> None:
        """``addr``: where this process's hub binds if it has none open yet (a URL,
        or ``ipc://DIR/`` for a socket file in DIR; ``zdf.runtime.hub``)."""
        self.reactor = reactor
        self.name = name
        self.stats: Counter[str] = Counter()
        self._on_credit = on_credit
        self._on_subscribe = on_subscribe
        self._on_eos_acked = on_eos_acked
        self._subs: list[_Subscriber | None] = [None] * channels
        self._attempts = [-1] * channels  # the highest subscriber attempt per channel
        self._handlers = {"sub": self._on_sub, "ack": self._on_ack, "eos-ack": self._on_eos_ack}
        self.hub = hubs.hub(reactor, addr)
        self.id = hubs.new_id()
        self.addr = self.hub.address(self.id)
        self.hub.attach(self.id, wrap(self._deliver))
        self.closed = False

    @property
    def channels(self) -> int:
        return len(self._subs)

    def close(self, linger: float = 0.0) -> None:
        """Close; with ``linger`` (seconds) what was sent still goes out meanwhile."""
        if not self.closed:
            self.closed = True
            self.hub.detach(self.id, linger)

    # -- the owner's side ------------------------------------------------
    def subscribed(self, ch: int) -> bool:
        return self._subs[ch] is not None

    def credit(self, ch: int) -> int:
        sub = self._subs[ch]
        return 0 if sub is None or sub.eos_sent else sub.credit

    def in_flight(self, ch: int) -> int:
        sub = self._subs[ch]
        return 0 if sub is None else sub.sent - sub.acked

    def send(self, ch: int, rows: np.ndarray, pos: int, next_pos: int) -> None:
        """Send one batch; the owner must have checked ``credit(ch) > 0``."""
        sub = self._subs[ch]
        if sub is None or sub.credit <= 0 or sub.eos_sent:
            raise RuntimeError(f"{self.name}[{ch}]: send without credit")
        header = encode(Kind.EVENT, "batch", 0, {"sid": sub.sid, "pos": pos, "next": next_pos})
        if not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(rows)
        self.hub.send(sub.peer, sub.pipe, header, rows.data)
        sub.sent += 1
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)

    def send_eos(self, ch: int, pos: int) -> None:
        sub = self._subs[ch]
        if sub is None:
            raise RuntimeError(f"{self.name}[{ch}]: eos before a subscriber")
        sub.eos_sent = True
        header = encode(Kind.EVENT, "eos", 0, {"sid": sub.sid, "pos": pos})
        self.hub.send(sub.peer, sub.pipe, header)

    def eos_sent(self, ch: int) -> bool:
        sub = self._subs[ch]
        return sub is not None and sub.eos_sent

    def eos_acked(self, ch: int) -> bool:
        sub = self._subs[ch]
        return sub is not None and sub.eos_acked

    # -- the receivers' side ---------------------------------------------
    def _deliver(self, messages: list[Any]) -> None:
        """What the hub read for this port in one wake-up: (peer, pipe, env) each."""
        for peer, pipe, env in messages:
            if self.closed:
                return
            try:
                op, body = _body(env.bytes)
                handler = self._handlers.get(op)
                if handler is None:
                    raise ProtocolError(f"unknown operation {op!r}")
                handler(peer.bytes, pipe.bytes, body)
            except ProtocolError as exc:
                self.stats["malformed"] += 1
                log.debug("%s: dropped a bad message: %s", self.name, exc)

    def _channel(self, body: dict[str, Any]) -> int:
        return _int(body, "ch", 0, len(self._subs) - 1)

    def _on_sub(self, peer: bytes, pipe: bytes, body: dict[str, Any]) -> None:
        ch = self._channel(body)
        sid = _int(body, "sid")
        start = _int(body, "from")
        window = _int(body, "window", 1, MAX_WINDOW)
        attempt = _int(body, "attempt", 0, MAX_ATTEMPT) if "attempt" in body else 0
        if attempt < self._attempts[ch]:
            self.stats["fenced"] += 1
            log.info("%s[%d]: ignored a subscription from stale attempt %d", self.name, ch, attempt)
            return
        self._attempts[ch] = attempt
        self._subs[ch] = _Subscriber(peer, pipe, sid, window)
        self.stats["subscribes"] += 1
        if self._on_subscribe is not None:
            self._on_subscribe(ch, start)
        self._on_credit(ch)

    def _current(
        self, peer: bytes, pipe: bytes, body: dict[str, Any]
    ) -> tuple[int, _Subscriber] | None:
        ch = self._channel(body)
        sub = self._subs[ch]
        if sub is None or sub.peer != peer or sub.pipe != pipe or sub.sid != _int(body, "sid"):
            self.stats["stale"] += 1
            return None
        return ch, sub

    def _on_ack(self, peer: bytes, pipe: bytes, body: dict[str, Any]) -> None:
        found = self._current(peer, pipe, body)
        if found is None:
            return
        ch, sub = found
        sub.acked = max(sub.acked, min(_int(body, "n"), sub.sent))
        self._on_credit(ch)

    def _on_eos_ack(self, peer: bytes, pipe: bytes, body: dict[str, Any]) -> None:
        found = self._current(peer, pipe, body)
        if found is None:
            return
        ch, sub = found
        if "n" in body:
            sub.acked = max(sub.acked, min(_int(body, "n"), sub.sent))
        if sub.eos_sent and not sub.eos_acked:
            sub.eos_acked = True
            if self._on_eos_acked is not None:
                self._on_eos_acked(ch)


class InPort:
    """The receiving end: a pipe (on this process's dialer to the sender's hub)
    subscribed to one channel of an ``OutPort``.

    ``on_batch(rows, pos, next)`` gets each batch in order (``rows`` is a view on
    the received frame); the owner calls ``ack()`` once per batch when it has
    consumed it, in order. ``on_eos(pos)`` comes after the last batch; the owner
    calls ``ack_eos()`` when it has consumed everything. ``connect(addr)`` may be
    called again when the sender moves; the port then resubscribes from ``pos``
    (or from ``resume()`` when given). An ``active=False`` port connects but does
    not subscribe until ``restart(pos)``: a stage that replays from whatever
    position its own downstream asks for.
    """

    def __init__(
        self,
        reactor: Reactor,
        channel: int,
        *,
        on_batch: BatchCallback,
        on_eos: Callable[[int], None],
        start: int = 0,
        window: int = DEFAULT_WINDOW,
        dtype: np.dtype[Any] = RECORD_DTYPE,
        name: str = "in",
        wrap: Wrap = _same,
        defer: Callable[[Callable[[], None]], None] = _now,
        attempt: int = 0,
        resume: Callable[[], int] | None = None,
        active: bool = True,
    ) -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be from 1 to {MAX_WINDOW}")
        self.reactor = reactor
        self.channel = channel
        self.window = window
        self.dtype = dtype
        self.name = name
        self.pos = start
        self.addr: str | None = None
        self.id = hubs.new_id()  # this pipe on its dialer
        self._dialer: hubs.Dialer | None = None
        self._port = b""  # the sender's port on its hub
        self.ended = False
        self.closed = False
        self.stats: Counter[str] = Counter()
        self._on_batch = on_batch
        self._on_eos = on_eos
        self._sid = 0
        self._delivered = 0
        self._acked = 0
        self._stale_unacked = 0  # delivered under an earlier subscription, not yet acked
        self._ack_scheduled = False
        self._deliver_wrapped = wrap(self._deliver)
        self._defer = defer
        self.attempt = attempt
        self.active = active
        self._resume = resume

    @property
    def unacked(self) -> int:
        return self._stale_unacked + self._delivered - self._acked

    @property
    def transport(self) -> str | None:
        """How this pipe reaches its sender: inproc, ipc or tcp (``zdf.runtime.hubaddr``)."""
        return None if self._dialer is None else self._dialer.transport

    def connect(self, addr: str) -> None:
        """(Re)connect to the sender at ``addr`` and subscribe from ``pos``."""
        if self.closed or (addr == self.addr and self._dialer is not None):
            return
        url, port = hubs.split(addr)
        self._drop_dialer()
        self.addr = addr
        self._port = port
        self._dialer = hubs.dialer(self.reactor, url)
        self._dialer.attach(self.id, self._deliver_wrapped)
        if self.active:
            self._subscribe()

    def restart(self, pos: int) -> None:
        """Forget everything delivered (the owner dropped it) and subscribe from ``pos``."""
        self.active = True
        self.pos = pos
        self._stale_unacked = 0
        self._delivered = self._acked = 0
        self._ack_scheduled = False
        if self._dialer is not None:
            self._subscribe()

    def close(self, linger: float = 0.0) -> None:
        """Close; with ``linger`` (seconds) the last acks still go out meanwhile."""
        self.closed = True
        self._drop_dialer(linger)

    def ack(self, n: int = 1) -> None:
        """The owner consumed ``n`` more batches (in delivery order).

        Acks of one burst go out as one message at its end (see ``defer``).
        """
        stale = min(n, self._stale_unacked)
        self._stale_unacked -= stale
        n -= stale
        if n <= 0:
            return
        self._acked = min(self._acked + n, self._delivered)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self._defer(self._send_ack)

    def _send_ack(self) -> None:
        if not self._ack_scheduled:
            return  # sent with the end of stream's ack, or forgotten by a restart
        self._ack_scheduled = False
        if not self.closed:
            self._send("ack", {"ch": self.channel, "sid": self._sid, "n": self._acked})

    def ack_eos(self) -> None:
        """Everything was consumed: the end of stream's ack carries the last acks too
        (one message, not two, per pipe of a one-batch table)."""
        self._ack_scheduled = False
        self._send("eos-ack", {"ch": self.channel, "sid": self._sid, "n": self._acked})

    # -- internals ---------------------------------------------------------
    def _drop_dialer(self, linger: float = 0.0) -> None:
        if self._dialer is not None:
            self._dialer.detach(self.id, linger)
            self._dialer = None

    def _subscribe(self) -> None:
        self._stale_unacked += self._delivered - self._acked
        self._sid += 1
        self._delivered = self._acked = 0
        self.ended = False
        if self._resume is not None:
            self.pos = self._resume()
        body = {
            "ch": self.channel,
            "sid": self._sid,
            "from": self.pos,
            "window": self.window,
            "attempt": self.attempt,
        }
        self._send("sub", body)
        self.stats["subscribes"] += 1

    def _send(self, op: str, body: dict[str, Any]) -> None:
        if self._dialer is None:
            return
        try:
            self._dialer.send(self._port, self.id, encode(Kind.EVENT, op, 0, body))
        except zmq.ZMQError as exc:  # the queue to a dead peer is full; resubscribing repairs
            self.stats["send_failed"] += 1
            log.debug("%s: %s not sent: %s", self.name, op, exc)

    def _deliver(self, messages: list[Any]) -> None:
        """What the dialer read for this pipe in one wake-up: [env] or [env, rows] each."""
        dialer = self._dialer
        for parts in messages:
            if dialer is None or dialer is not self._dialer:
                return  # the owner reconnected or closed from inside a callback
            try:
                op, body = _body(parts[0].bytes)
                if _int(body, "sid") != self._sid:
                    self.stats["stale"] += 1
                    continue
                if op == "batch" and len(parts) == 2:
                    self._batch(body, parts[1])
                elif op == "eos" and len(parts) == 1:
                    self._eos(body)
                else:
                    raise ProtocolError(f"unexpected {op!r} with {len(parts)} frames")
            except ProtocolError as exc:
                self.stats["malformed"] += 1
                log.warning(
                    "%s: bad message (%s); subscribing again from %d", self.name, exc, self.pos
                )
                self._subscribe()

    def _batch(self, body: dict[str, Any], frame: zmq.Frame) -> None:
        pos, next_pos = _int(body, "pos"), _int(body, "next")
        if pos != self.pos or self.ended:
            raise ProtocolError(f"batch at {pos}, expected {self.pos}")
        buf = frame.buffer
        if len(buf) % self.dtype.itemsize:
            raise ProtocolError(f"batch of {len(buf)} bytes is not whole rows")
        rows = np.frombuffer(buf, self.dtype)
        rows.flags.writeable = False  # over inproc it is the sender's memory (wire.inproc)
        self.pos = next_pos
        self._delivered += 1
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        self._on_batch(rows, pos, next_pos)

    def _eos(self, body: dict[str, Any]) -> None:
        pos = _int(body, "pos")
        if pos != self.pos:
            raise ProtocolError(f"end of stream at {pos}, expected {self.pos}")
        self.ended = True
        self._on_eos(pos)
