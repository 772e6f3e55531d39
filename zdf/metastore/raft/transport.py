"""Replica-to-replica messages over ZeroMQ.

Each replica binds one ROUTER at its ``peer-addr`` and keeps one DEALER per
peer, connected to the address ``initial-cluster`` gives for it, with the
replica's own name as identity. Every Raft message is a one-way event: a
request goes out on the sender's DEALER, its answer comes back on the other
replica's DEALER, so the ROUTER only ever receives, and the ROUTER's view of
the sender's identity says who sent what. DEALERs use ``IMMEDIATE``: a
message to a peer that is not connected is dropped at once (Raft resends),
instead of piling up for a peer that may be gone for minutes.

This is the hot path of replication, so the ROUTER is read here directly
rather than through a ``Channel`` (no request/reply machinery, no handler
table: every message is an event for the one ``on_message``), and a message is
encoded as a pre-packed envelope head per op followed by the packed body --
the same bytes ``zdf.wire.codec.encode`` would give. The contract of a control
socket holds: a malformed or unknown message is counted and answered with an
error (which the sending replica's DEALER discards), never a crash.

One ZeroMQ message may carry several Raft messages, one per frame, handled in
order (at most ``MAX_FRAMES_PER_MESSAGE``; a malformed frame is refused alone).
A leader uses that to send its apply hints with the next append to each
follower: one hop and one wake-up of the follower instead of two.

The ROUTER uses ``ROUTER_HANDOVER`` so that a restarted replica takes its name
back at once. The price: anyone connecting with a replica's name takes that
name from the replica's live connection, which the ROUTER then no longer reads.
The DEALERs' ZMTP heartbeats notice such a dead-ended connection (no PONG) and
reconnect, so a hostile or confused peer cuts a link for a moment, not forever.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import zmq

from zdf.errors import ProtocolError
from zdf.metastore.raft.messages import MESSAGES, Message, parse_message
from zdf.wire.codec import PROTOCOL_VERSION, Kind, encode, packb, unpackb
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import wire_error
from zdf.wire.security import PEERS
from zdf.wire.sockets import close_socket, endpoint, has_input, make_socket, recv_routed

log = logging.getLogger(__name__)

PEER_SNDHWM = 2000
RECONNECT_MS = 50
PEER_HEARTBEAT_MS = 500
PEER_HEARTBEAT_TIMEOUT_MS = 2500
"""ZMTP heartbeats on each DEALER: a connection whose far end stopped reading (its
ROUTER handed our name to another connection, see the module docstring) is
dropped when no PONG came for this long, and dialled again, which takes the name
back. Generous on purpose: a slow or lossy link must not be cut by it (Raft's own
timeouts deal with those; a short timeout here made elections on a flaky link)."""
MAX_PEER_MESSAGE_BYTES = 64 << 20
MAX_MESSAGES_PER_WAKEUP = 256
MAX_FRAMES_PER_MESSAGE = 64

OnMessage = Callable[[str, Message], None]


def _head(op: str) -> bytes:
    """The packed envelope of an event ``op`` up to (and including) the body's key.

    ``encode`` packs a map in insertion order, body last, so head + packb(body)
    is byte for byte what ``encode(Kind.EVENT, op, 0, body)`` gives.
    """
    sentinel = b"\xc0"  # packb(None)
    whole = encode(Kind.EVENT, op, 0, None)
    assert whole.endswith(sentinel)
    return whole[: -len(sentinel)]


HEADS = {op: _head(op) for op in MESSAGES}
_EVENT = Kind.EVENT.value


class PeerTransport:
    def __init__(
        self,
        reactor: Reactor,
        name: str,
        bind: str,
        peers: dict[str, str],
        on_message: OnMessage,
    ) -> None:
        self.name = name
        self.stats: Counter[str] = Counter()
        self._on_message = on_message
        self.on_drained: Callable[[], None] | None = None  # after each read of the waiting
        self._reactor = reactor
        self._dealers: dict[str, zmq.Socket[bytes]] = {}
        self._router = make_socket(
            zmq.ROUTER, bind=bind, max_message_bytes=MAX_PEER_MESSAGE_BYTES, allow=PEERS
        )
        self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its name back
        reactor.add_reader(self._router, self._on_readable)
        try:
            for peer, addr in peers.items():
                sock = make_socket(zmq.DEALER, identity=name.encode(), sndhwm=PEER_SNDHWM)
                sock.setsockopt(zmq.HEARTBEAT_IVL, PEER_HEARTBEAT_MS)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, PEER_HEARTBEAT_TIMEOUT_MS)
                sock.setsockopt(zmq.HEARTBEAT_TTL, PEER_HEARTBEAT_TIMEOUT_MS)
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
                sock.connect(endpoint(addr))
                self._dealers[peer] = sock
                reactor.add_reader(sock, functools.partial(_discard, sock))
        except Exception:
            self.close()
            raise

    # -- receiving -------------------------------------------------------------------
    def _on_readable(self) -> None:
        router = self._router
        for _ in range(MAX_MESSAGES_PER_WAKEUP):
            try:
                parts = recv_routed(router)
            except zmq.ZMQError:  # Again: drained
                break
            if not 2 <= len(parts) <= MAX_FRAMES_PER_MESSAGE + 1:
                self.stats["malformed"] += 1
                if parts:
                    too_many = f"a peer message is 1 to {MAX_FRAMES_PER_MESSAGE} frames"
                    self._refuse(parts[0], ProtocolError(too_many))
                continue
            identity = parts[0]
            try:
                sender = identity.decode()
            except UnicodeDecodeError as exc:
                self.stats["malformed"] += 1
                self._refuse(identity, exc)
                continue
            for part in parts[1:]:
                try:
                    msg = _parse(part)
                except ProtocolError as exc:
                    self.stats["malformed"] += 1
                    self._refuse(identity, exc)
                    continue
                try:
                    self._on_message(sender, msg)
                except Exception:  # a bug must not stop the others of this wake-up
                    self.stats["handler_errors"] += 1
                    log.exception("raft %s: handling %s from %s failed", self.name, msg.op, sender)
        if self.on_drained is not None:
            self.on_drained()

    def has_input(self) -> bool:
        """Whether a peer message is waiting to be read."""
        return has_input(self._router)

    def _refuse(self, identity: bytes, exc: Exception) -> None:
        error = ProtocolError(str(exc)) if not isinstance(exc, ProtocolError) else exc
        try:
            self._router.send_multipart(
                [identity, encode(Kind.ERROR, "error", 0, wire_error(error))], zmq.NOBLOCK
            )
        except zmq.ZMQError:
            pass

    # -- sending ---------------------------------------------------------------------
    def send(self, to: str, msg: Message, *, before: Sequence[bytes] = ()) -> None:
        """Send ``msg`` to ``to``, in one ZeroMQ message after the ``frame``s ``before``."""
        sock = self._dealers.get(to)
        if sock is None:
            return
        try:
            if before:
                parts = [*before[1 - MAX_FRAMES_PER_MESSAGE :], frame(msg)]
                sock.send_multipart(parts, zmq.NOBLOCK)
            else:
                sock.send(frame(msg), zmq.NOBLOCK)
            self.stats["sent"] += 1
        except zmq.Again:
            self.stats["dropped"] += 1
        except zmq.ZMQError as exc:
            self.stats["send_failed"] += 1
            log.debug("raft: send to %s failed: %s", to, exc)

    def close(self) -> None:
        for sock in self._dealers.values():
            self._reactor.remove_reader(sock)
            close_socket(sock)
        self._dealers.clear()
        self._reactor.remove_reader(self._router)
        close_socket(self._router)


def frame(msg: Message) -> bytes:
    """The one frame that carries ``msg`` (for ``PeerTransport.send``'s ``before``)."""
    return HEADS[msg.op] + packb(msg.to_wire())


def _parse(frame: bytes) -> Message:
    """The message in one envelope frame (``ProtocolError`` if it is not a peer event)."""
    envelope = unpackb(frame)
    if type(envelope) is not dict:
        raise ProtocolError("envelope is not a map")
    if envelope.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {envelope.get('v')!r} not supported")
    if envelope.get("k") != _EVENT:
        raise ProtocolError("peer messages are one-way events")
    return parse_message(envelope.get("op"), envelope.get("b"))


def _discard(sock: zmq.Socket[bytes]) -> None:
    """Peers never answer on our DEALERs except with error replies; drop them."""
    for _ in range(256):
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            return
