"""Replica-to-replica messages over ZeroMQ.

Each replica binds one ROUTER at its ``peer-addr`` and keeps one DEALER per
peer, connected to the address ``initial-cluster`` gives for it, with the
replica's own name as identity. Every Raft message is a one-way event: a
request goes out on the sender's DEALER, its answer comes back on the other
replica's DEALER, so the ROUTER only ever receives, and the ROUTER's view of
the sender's identity says who sent what. DEALERs use ``IMMEDIATE``: a
message to a peer that is not connected is dropped at once (Raft resends),
instead of piling up for a peer that may be gone for minutes.

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
from collections.abc import Callable
from typing import Any

import zmq

from zdf.metastore.raft.messages import MESSAGES, Message
from zdf.wire.codec import Kind, encode
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import close_socket, endpoint, make_socket

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

OnMessage = Callable[[str, str, Any], None]


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
        router = make_socket(zmq.ROUTER, bind=bind, max_message_bytes=MAX_PEER_MESSAGE_BYTES)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its name back
        handlers = {op: self._receive for op in MESSAGES}
        self.channel = Channel(reactor, router, handlers, name=f"raft {name}")
        self._reactor = reactor
        self._dealers: dict[str, zmq.Socket[bytes]] = {}
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

    def _receive(self, call: Call) -> None:
        if not call.is_event or call.peer is None:
            self.stats["not_event"] += 1
            return
        try:
            sender = call.peer.decode()
        except UnicodeDecodeError:
            self.stats["bad_sender"] += 1
            return
        self._on_message(sender, call.op, call.body)

    def send(self, to: str, msg: Message) -> None:
        sock = self._dealers.get(to)
        if sock is None:
            return
        try:
            sock.send(encode(Kind.EVENT, msg.op, 0, msg.to_dict()), zmq.NOBLOCK)
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
        self.channel.close()


def _discard(sock: zmq.Socket[bytes]) -> None:
    """Peers never answer on our DEALERs except with error replies; drop them."""
    for _ in range(256):
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            return
