"""Request/reply over ZeroMQ: a reactor-driven ``Channel`` and a blocking ``RpcClient``.

A ``Channel`` wraps one ROUTER or DEALER socket. Incoming requests are dispatched
through a handler table (op name -> callable); an unknown op, a malformed frame
or a handler that raises gets an error reply, never a crash. A handler returns
its result, or ``DEFER`` and answers later through ``call.reply``. The same
channel sends its own requests (``request``, answered through a callback with a
deadline) and one-way events (``notify``), so a master and an executor can talk
both ways over one DEALER/ROUTER pair.

``RpcClient`` is the blocking side for command-line tools and libraries: one
DEALER, a deadline per call, a fresh socket and the next endpoint on each retry
(the Lazy Pirate pattern), and it follows a ``NotLeader`` hint.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from zdf.errors import (
    NotLeader,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    Timeout,
    ZdfError,
    from_wire,
)
from zdf.wire.bigmsg import (
    CHUNK,
    CHUNK_PREFIX,
    DEFAULT_MAX_VALUE_BYTES,
    PUMP_INTERVAL,
    BigReceiver,
    BigSender,
    is_big,
    send_tracked,
)
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.security import current as current_security
from zdf.wire.sockets import (
    close_socket,
    make_socket,
    recv_parts,
    recv_routed,
    recv_routed_role,
    role_of,
)

log = logging.getLogger(__name__)

DEFER: Any = object()
"""Returned by a handler that will answer later through ``Call.reply``/``Call.fail``."""

MAX_MESSAGES_PER_WAKEUP = 256
CHUNK_BYTES_PER_WAKEUP = 16 << 20  # chunks of big values copied before the loop goes on
MULTI_ENDPOINT_ATTEMPT = 1.0
# Plain ints: or-ing pyzmq's flag enums per message costs more than the send itself.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


@dataclass(slots=True)
class Call:
    """One incoming request or event, as seen by a handler."""

    channel: Channel
    peer: bytes | None
    op: str
    rid: int
    body: Any
    frames: list[Any] = field(default_factory=list)
    is_event: bool = False
    answered: bool = False
    role: str | None = None
    """The caller's role from its CURVE key; None on a socket without CURVE (protected
    mode, ipc, inproc) or on a DEALER, whose one peer CURVE checked at connect."""

    def reply(self, result: Any = None, frames: Sequence[Any] = ()) -> None:
        if self.is_event or self.answered:
            return
        self.answered = True
        self.channel.send(Kind.REPLY, self.op, self.rid, result, peer=self.peer, frames=frames)

    def fail(self, error: BaseException) -> None:
        if self.is_event or self.answered:
            return
        self.answered = True
        self.channel.send(Kind.ERROR, self.op, self.rid, wire_error(error), peer=self.peer)


Handler = Callable[[Call], Any]
ReplyCallback = Callable[[Any, "ZdfError | None"], None]


def wire_error(error: BaseException) -> dict[str, Any]:
    if isinstance(error, ZdfError):
        return error.to_wire()
    return {"type": type(error).__name__, "message": str(error), "data": {}}


@dataclass(slots=True)
class _Pending:
    callback: ReplyCallback
    timer: Timer | None
    peer: bytes | None


class Channel:
    """A ROUTER or DEALER socket served by a reactor (see the module docstring)."""

    def __init__(
        self,
        reactor: Reactor,
        sock: zmq.Socket[bytes],
        handlers: Mapping[str, Handler],
        *,
        name: str = "",
        zero_copy: bool = False,
        roles: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.sock = sock
        self.handlers = dict(handlers)
        self.name = name or ("router" if sock.type == zmq.ROUTER else "dealer")
        self.is_router = sock.type == zmq.ROUTER
        self.zero_copy = zero_copy
        # op -> the roles that may call it; checked for every call that has a role.
        self.roles = roles
        self.secured = self.is_router and bool(sock.getsockopt(zmq.CURVE_SERVER))
        self.stats: Counter[str] = Counter()
        self.on_traffic: Callable[[bytes | None], None] | None = None
        # Called before every handler; raising refuses the call (a standby's NotLeader).
        self.gate: Callable[[Call], None] | None = None
        # Called after each read of the socket's waiting messages (a batch's flush).
        self.on_drained: Callable[[], None] | None = None
        self._pending: dict[int, _Pending] = {}
        self._rids = itertools.count(1)
        self.big_in: BigReceiver | None = None  # ``enable_chunks``
        self.big_out: BigSender | None = None
        self._pump_timer: Timer | None = None
        self._chunk_bytes = 0  # of chunks read in this wake-up
        reactor.add_reader(sock, self._on_readable)

    def enable_chunks(self, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        """Send messages over ``bigmsg.CHUNK_THRESHOLD`` in chunks, and rebuild the
        chunked messages that arrive (each at most ``max_value_bytes`` and an envelope)."""
        self.big_in = BigReceiver(max_value_bytes)
        self.big_out = BigSender(self._send_chunk)

    def close(self, linger: float = 0.0) -> None:
        """Stop serving; with ``linger`` (seconds) queued messages still go out meanwhile."""
        self.reactor.remove_reader(self.sock)
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        close_socket(self.sock, linger)
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()

    # -- sending -----------------------------------------------------------
    def send(
        self,
        kind: Kind,
        op: str,
        rid: int,
        body: Any,
        *,
        peer: bytes | None = None,
        frames: Sequence[Any] = (),
    ) -> bool:
        if self.is_router and peer is None:
            raise ValueError("a ROUTER channel needs a peer to send to")
        frame = encode(kind, op, rid, body)
        if frames and self.big_out is not None and is_big([frame, *frames]):
            self.big_out.send(peer, [frame, *frames])
            self._pump_big()
            return True
        try:
            if frames:
                parts: list[Any] = [frame, *frames]
                if self.is_router:
                    parts.insert(0, peer)
                self.sock.send_multipart(parts, _NOBLOCK, copy=False)
            else:
                # The common case, one frame: sent part by part as send_multipart
                # would (a ROUTER refuses or routes a message at its first part).
                if self.is_router:
                    self.sock.send(peer, _NOBLOCK_MORE)  # type: ignore[arg-type]
                self.sock.send(frame, _NOBLOCK)
            return True
        except zmq.Again:
            self.stats["send_dropped"] += 1
            return False
        except zmq.ZMQError as exc:
            self.stats["send_failed"] += 1
            log.debug("%s: send failed: %s", self.name, exc)
            return False

    def _send_chunk(self, peer: Any, parts: list[Any]) -> Any:
        return send_tracked(self.sock, [peer, *parts] if self.is_router else parts, _NOBLOCK)

    def _pump_big(self) -> None:
        """Send the chunks the windows allow; again shortly while any wait."""
        self._pump_timer = None
        if self.big_out is not None and self.big_out.pump() and not self.sock.closed:
            self._pump_timer = self.reactor.call_later(PUMP_INTERVAL, self._pump_big)

    def notify(
        self, op: str, body: Any = None, *, peer: bytes | None = None, frames: Sequence[Any] = ()
    ) -> bool:
        return self.send(Kind.EVENT, op, 0, body, peer=peer, frames=frames)

    def request(
        self,
        op: str,
        body: Any = None,
        *,
        peer: bytes | None = None,
        frames: Sequence[Any] = (),
        timeout: float | None = 5.0,
        callback: ReplyCallback | None = None,
    ) -> int:
        rid = next(self._rids)
        if callback is not None:
            timer = None
            if timeout is not None:
                timer = self.reactor.call_later(timeout, lambda: self._expire(rid, op))
            self._pending[rid] = _Pending(callback, timer, peer)
        if not self.send(Kind.REQUEST, op, rid, body, peer=peer, frames=frames):
            # Marked: the peer never saw it (a full queue, a peer gone), so sending it
            # again is safe, unlike after a timeout.
            error = ZdfError(f"{self.name}: could not send {op!r}", unsent=True)
            self._complete(rid, None, error)
        return rid

    def _expire(self, rid: int, op: str) -> None:
        self._complete(rid, None, Timeout(f"{op!r} got no reply in time"))

    def _complete(self, rid: int, result: Any, error: ZdfError | None) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        pending.callback(result, error)

    # -- receiving ---------------------------------------------------------
    def read_pending(self) -> None:
        """Handle what has arrived now, as when the socket is next found readable: for a
        caller that held the reactor a long time and must hear what came meanwhile first."""
        self._on_readable()

    def _on_readable(self) -> None:
        sock = self.sock
        fast = self.is_router and not self.zero_copy
        secured = self.secured
        parts: list[Any]
        role: str | None = None
        chunks = CHUNK_PREFIX if self.big_in is not None else None  # read those zero-copy
        self._chunk_bytes = 0
        for _ in range(MAX_MESSAGES_PER_WAKEUP):
            if self._chunk_bytes > CHUNK_BYTES_PER_WAKEUP:
                break  # copying chunks: let the loop's timers run (the socket stays readable)
            try:
                if fast:
                    if secured:
                        parts, role = recv_routed_role(sock, chunks)
                    else:
                        parts = recv_routed(sock, chunks)
                elif chunks is not None and not self.zero_copy:
                    parts = recv_parts(sock, chunks)
                else:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=not self.zero_copy)
                    if secured:
                        role = role_of(parts[0])
            except zmq.ZMQError:  # Again: drained
                break
            self._dispatch(parts, role)
        if self.on_drained is not None:
            self.on_drained()

    def _dispatch(self, parts: list[Any], role: str | None = None) -> None:
        peer: bytes | None = None
        if self.is_router:
            if len(parts) < 2:
                self.stats["malformed"] += 1
                return
            peer = bytes(parts[0])
            parts = parts[1:]
        if self.on_traffic is not None:
            self.on_traffic(peer)
        head = parts[0]
        try:
            msg = decode(head.buffer if isinstance(head, zmq.Frame) else head)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            rid = exc.data.get("rid", 0) if exc.data.get("kind") == Kind.REQUEST.value else 0
            if peer is not None or rid:
                self.send(Kind.ERROR, "error", rid, wire_error(exc), peer=peer)
            return
        frames = parts[1:]
        if msg.op == CHUNK and self.big_in is not None and msg.kind is Kind.EVENT:
            self._on_chunk(peer, msg.body, frames, role)
            return
        if msg.kind is Kind.REQUEST or msg.kind is Kind.EVENT:
            call = Call(self, peer, msg.op, msg.rid, msg.body, frames, msg.kind is Kind.EVENT)
            call.role = role
            self._serve(call)
        elif not self._asked(msg.rid, peer):
            self.stats["stray_reply"] += 1  # not an answer from the peer that was asked
        elif msg.kind is Kind.REPLY:
            self._complete_frames(msg.rid, msg.body, frames)
        else:
            self._complete(msg.rid, None, from_wire(msg.body))

    def _on_chunk(self, peer: bytes | None, header: Any, data: list[Any], role: str | None) -> None:
        """A chunk of a big message: once the last is in, the message is handled whole."""
        assert self.big_in is not None
        self._chunk_bytes += sum(map(len, data))
        try:
            parts = self.big_in.feed(peer, header, data)
        except ProtocolError as exc:
            self.stats["chunk_refused"] += 1
            log.warning("%s: refused a chunk: %s", self.name, exc)
            return
        if parts is not None:
            self._dispatch([peer, *parts] if self.is_router else parts, role)

    def _asked(self, rid: int, peer: bytes | None) -> bool:
        pending = self._pending.get(rid)
        return pending is None or pending.peer == peer

    def _complete_frames(self, rid: int, body: Any, frames: list[Any]) -> None:
        self._complete(rid, (body, frames) if frames else body, None)

    def serve(self, call: Call) -> None:
        """Serve ``call`` as if it had just arrived (``zdf.wire.batchcall``)."""
        self._serve(call)

    def _serve(self, call: Call) -> None:
        handler = self.handlers.get(call.op)
        if handler is None:
            self.stats["unknown_op"] += 1
            call.fail(ProtocolError(f"unknown operation {call.op!r}"))
            return
        if call.role is not None and self.roles is not None:
            allowed = self.roles.get(call.op)
            if allowed is None or call.role not in allowed:
                self.stats["refused"] += 1
                call.fail(PermissionDenied(f"{call.op!r} is not for role {call.role!r}"))
                return
        try:
            if self.gate is not None:
                self.gate(call)
            result = handler(call)
        except ZdfError as exc:
            self.stats["handler_errors"] += 1
            call.fail(exc)
            return
        except Exception as exc:
            self.stats["handler_crashes"] += 1
            log.exception("%s: handler for %r failed", self.name, call.op)
            call.fail(RemoteError(f"internal error: {exc}", remote_type=type(exc).__name__))
            return
        if result is not DEFER:
            call.reply(result)


class RpcClient:
    """A blocking client with deadlines, retries on fresh sockets and leader hints."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
        identity: bytes | None = None,
        server_role: str = "master",
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.server_role = server_role  # whose key the server must hold (with CURVE)
        if not self.endpoints:
            raise ValueError("RpcClient needs at least one endpoint")
        self.timeout = timeout
        if attempt_timeout is None and len(self.endpoints) > 1:
            # With several endpoints a dead one must not eat the whole deadline.
            attempt_timeout = min(MULTI_ENDPOINT_ATTEMPT, timeout / 2)
        self.attempt_timeout = attempt_timeout
        self._identity = identity
        self._index = 0
        self._rids = itertools.count(1)
        self._sock: zmq.Socket[bytes] | None = None
        self._pid = os.getpid()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._sock = make_socket(
                zmq.DEALER,
                connect=self.endpoint,
                identity=self._identity,
                server_role=self.server_role,
            )
        return self._sock

    def _rotate(self, to: str | None = None) -> None:
        close_socket(self._sock)
        self._sock = None
        if to is not None:
            if to not in self.endpoints:
                self.endpoints.append(to)
            self._index = self.endpoints.index(to)
        else:
            self._index = (self._index + 1) % len(self.endpoints)

    def close(self) -> None:
        close_socket(self._sock)
        self._sock = None

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        op: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        frames: Sequence[Any] = (),
        retry: bool = True,
    ) -> Any:
        """Send ``op`` and wait for its reply; raise the remote error or ``Timeout``."""
        result, _ = self.call_frames(op, body, timeout=timeout, frames=frames, retry=retry)
        return result

    def call_frames(
        self,
        op: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        frames: Sequence[Any] = (),
        retry: bool = True,
    ) -> tuple[Any, list[bytes]]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last_error: ZdfError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt = (
                remaining if self.attempt_timeout is None else min(remaining, self.attempt_timeout)
            )
            rid = next(self._rids)
            sock = self._socket()
            try:
                sock.send_multipart([encode(Kind.REQUEST, op, rid, body), *frames], zmq.NOBLOCK)
            except zmq.Again:
                self._rotate()
                continue
            try:
                return self._await(sock, rid, time.monotonic() + attempt)
            except NotLeader as exc:
                last_error = exc
                hint = exc.data.get("leader")
                self._rotate(hint if isinstance(hint, str) and hint else None)
                _pause(min(0.05, max(0.0, deadline - time.monotonic())), hint)
            except Timeout as exc:
                last_error = exc
                self._rotate()
            if not retry:
                assert last_error is not None
                raise last_error
        if isinstance(last_error, NotLeader):
            raise Timeout(f"{op!r}: no leader answered within the deadline ({last_error.message})")
        hint = "" if current_security() else " (a secured cluster needs --security-dir)"
        raise Timeout(f"{op!r} to {self.endpoint} got no reply within the deadline{hint}")

    def _await(self, sock: zmq.Socket[bytes], rid: int, deadline: float) -> tuple[Any, list[bytes]]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                if deadline - time.monotonic() <= 0:
                    raise Timeout("attempt timed out")
                continue
            parts = sock.recv_multipart()
            try:
                msg = decode(parts[0])
            except ProtocolError:
                continue
            if msg.rid != rid:
                continue  # a late reply to an earlier attempt
            if msg.kind is Kind.ERROR:
                raise from_wire(msg.body)
            return msg.body, parts[1:]


def _pause(seconds: float, hint: object) -> None:
    # Without a hint the cluster is electing: wait a little before asking again.
    if not hint and seconds > 0:
        time.sleep(seconds)
