"""Every ZeroMQ socket in zdf is made here.

One place sets the options every socket needs (linger 0 so shutdown never
hangs, a maximum message size so a hostile peer cannot exhaust memory, TCP
keepalive and ZMTP heartbeats so a dead peer is noticed) and is the single hook
where CURVE authentication can be switched on for all of them.
"""

from __future__ import annotations

import random
import socket as _socket
from collections import deque
from dataclasses import dataclass

import zmq

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Security:
    """CURVE keys; when set with ``set_security`` every socket made afterwards uses them."""

    public_key: bytes
    secret_key: bytes
    server_public_key: bytes


_security: Security | None = None


def set_security(security: Security | None) -> None:
    global _security
    _security = security


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process-wide context; recreated after a fork or spawn automatically by pyzmq."""
    return zmq.Context.instance()


def endpoint(addr: str) -> str:
    """``host:port`` (tcp implied), or a full ``tcp://``/``ipc://``/``inproc://`` URL."""
    if "://" in addr:
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return f"tcp://{host}:{port}"


FREE_PORT_RANGE = (20000, 32767)  # below Linux's ephemeral range (32768-60999)


_HANDED_OUT: deque[int] = deque(maxlen=4096)
"""Ports this process handed out lately: a cluster takes dozens before binding any,
and two random draws of the same free port would collide (a test run did that)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for tests and the local demo).

    Drawn below the ephemeral range, so that an outgoing connection made
    meanwhile cannot take it before the caller binds it, and never one this
    process handed out lately (its caller may not have bound it yet)."""
    for _ in range(200):
        port = random.randint(*FREE_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.append(port)
        return port
    raise OSError("no free port found")


def make_socket(
    kind: int,
    *,
    bind: str | None = None,
    connect: str | list[str] | None = None,
    identity: bytes | None = None,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    heartbeat_ms: int | None = None,
    subscribe: bytes | None = None,
    server: bool | None = None,
) -> zmq.Socket[bytes]:
    """Create a socket with zdf's defaults, then bind or connect it."""
    sock = context().socket(kind)
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 2)
    sock.setsockopt(zmq.IMMEDIATE, 0)
    if kind in (zmq.ROUTER,):
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if sndhwm is not None:
        sock.sndhwm = sndhwm
    if rcvhwm is not None:
        sock.rcvhwm = rcvhwm
    if heartbeat_ms:
        sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms * 3)
        sock.setsockopt(zmq.HEARTBEAT_TTL, heartbeat_ms * 3)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, subscribe or b"")
    _apply_security(sock, is_server=bind is not None if server is None else server)
    try:
        if bind is not None:
            sock.bind(endpoint(bind))
        if connect is not None:
            for addr in [connect] if isinstance(connect, str) else connect:
                sock.connect(endpoint(addr))
    except Exception:
        sock.close(0)
        raise
    return sock


def _apply_security(sock: zmq.Socket[bytes], *, is_server: bool) -> None:
    sec = _security
    if sec is None:
        return
    sock.curve_secretkey = sec.secret_key
    sock.curve_publickey = sec.public_key
    if is_server:
        sock.curve_server = True
    else:
        sock.curve_serverkey = sec.server_public_key


def close_socket(sock: zmq.Socket[bytes] | None, linger: float = 0.0) -> None:
    """Close ``sock``; with ``linger`` (seconds) what it queued still goes out meanwhile."""
    if sock is not None and not sock.closed:
        sock.close(max(0, round(linger * 1000)))


def has_input(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message is waiting to be received (without receiving it)."""
    events = sock.getsockopt(zmq.EVENTS)
    return isinstance(events, int) and bool(events & zmq.POLLIN)


_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def recv_routed(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The next message on a ROUTER, without blocking (``zmq.Again`` when none waits).

    What ``recv_multipart(NOBLOCK)`` gives, at half its cost on a hot path: a
    ROUTER's message is the sender's identity and at least one frame, and a
    message arrives whole, so the second frame is read without asking first
    (and plain ints spare pyzmq's enum conversions).
    """
    recv = sock.recv
    parts = [recv(_NOBLOCK), recv(_NOBLOCK)]
    while sock.getsockopt(_RCVMORE):
        parts.append(recv(_NOBLOCK))
    return parts
