"""Every ZeroMQ socket in zdf is made here.

One place sets the options every socket needs (linger 0 so shutdown never
hangs, a maximum message size so a hostile peer cannot exhaust memory, TCP
keepalive and ZMTP heartbeats so a dead peer is noticed) and is the single hook
where CURVE authentication is switched on for all of them (``zdf.wire.security``:
a socket that binds tcp:// is a CURVE server, one that connects names the role
of the server it expects, ``server_role``; protected mode refuses a non-loopback
bind without keys).
"""

from __future__ import annotations

import os
import random
import socket as _socket
from collections import deque
from typing import Any

import zmq

from zdf.wire import security

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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
    server_role: str | None = None,
    allow: frozenset[str] | None = None,
) -> zmq.Socket[bytes]:
    """Create a socket with zdf's defaults, then bind or connect it.

    With keys installed (``zdf.wire.security``), a tcp:// socket is CURVE: a
    server (it binds) lets in the roles in ``allow`` (default: every known
    key), a client checks that the server holds ``server_role``'s key (default:
    this process's own role). A socket made with nothing to bind or connect yet
    (it connects later) is taken to be for tcp:// peers."""
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
    is_server = bind is not None if server is None else server
    urls = [endpoint(a) for a in ([connect] if isinstance(connect, str) else connect or [])]
    if bind is not None:
        urls.insert(0, endpoint(bind))
    try:
        security.secure(
            sock,
            urls[0] if urls else "tcp://",
            server=is_server,
            server_role=server_role,
            allow=allow,
        )
        if bind is not None:
            security.check_bind(urls[0])
            try:
                sock.bind(urls[0])
            except zmq.ZMQError as exc:  # say where: "Address already in use" alone does not
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise zmq.ZMQError(exc.errno, f"cannot listen on {urls[0]}: {reason}") from None
            urls = urls[1:]
        for url in urls if connect is not None else ():
            sock.connect(url)
    except Exception:
        sock.close(0)
        raise
    return sock


def bind_also(sock: zmq.Socket[bytes], url: str, *, allow: frozenset[str] | None = None) -> str:
    """Bind the bound ``sock`` also at ``url``, secured as ``make_socket(bind=url)`` would
    secure it, and return the endpoint bound (``LAST_ENDPOINT``: a wildcard port resolved).

    libzmq takes a listener's security from the socket's options when it binds: so a
    socket made plain on ipc:// and then bound here on tcp:// with keys installed is
    CURVE on its tcp:// endpoint and stays plain on its ipc:// one (``zdf.runtime.hubaddr``)."""
    url = endpoint(url)
    security.secure(sock, url, server=True, server_role=None, allow=allow)
    security.check_bind(url)
    try:
        sock.bind(url)
    except zmq.ZMQError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise zmq.ZMQError(exc.errno, f"cannot listen on {url}: {reason}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


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


def recv_routed(sock: zmq.Socket[bytes], zero_copy_after: bytes | None = None) -> list[Any]:
    """The next message on a ROUTER, without blocking (``zmq.Again`` when none waits).

    What ``recv_multipart(NOBLOCK)`` gives, at half its cost on a hot path: a
    ROUTER's message is the sender's identity and at least one frame, and a
    message arrives whole, so the second frame is read without asking first
    (and plain ints spare pyzmq's enum conversions). A message whose first frame
    starts with ``zero_copy_after`` (a chunk of a big value, ``zdf.wire.bigmsg``)
    has its other frames read without a copy (as ``zmq.Frame``).
    """
    recv = sock.recv
    parts: list[Any] = [recv(_NOBLOCK), recv(_NOBLOCK)]
    _recv_rest(sock, parts, zero_copy_after is not None and parts[1].startswith(zero_copy_after))
    return parts


def recv_parts(sock: zmq.Socket[bytes], zero_copy_after: bytes | None = None) -> list[Any]:
    """``recv_multipart(NOBLOCK)``, with ``recv_routed``'s ``zero_copy_after``."""
    parts: list[Any] = [sock.recv(_NOBLOCK)]
    _recv_rest(sock, parts, zero_copy_after is not None and parts[0].startswith(zero_copy_after))
    return parts


def _recv_rest(sock: zmq.Socket[bytes], parts: list[Any], zero_copy: bool) -> None:
    recv = sock.recv
    while sock.getsockopt(_RCVMORE):
        parts.append(recv(_NOBLOCK, copy=not zero_copy))


def recv_routed_role(
    sock: zmq.Socket[bytes], zero_copy_after: bytes | None = None
) -> tuple[list[Any], str | None]:
    """``recv_routed``, and the sender's role: the ``User-Id`` that the ZAP handler
    gave its CURVE connection (None for a message that came in without one, over
    an inproc alias of the socket)."""
    first = sock.recv(_NOBLOCK, copy=False)
    parts: list[Any] = [first.bytes, sock.recv(_NOBLOCK)]
    _recv_rest(sock, parts, zero_copy_after is not None and parts[1].startswith(zero_copy_after))
    return parts, role_of(first)


def role_of(frame: object) -> str | None:
    """The role of the CURVE peer a received frame came from, if it came over CURVE
    (a ``zmq.Frame``; copied bytes carry no properties)."""
    try:
        role = frame.get("User-Id") if isinstance(frame, zmq.Frame) else None
    except zmq.ZMQError:
        return None
    return role if isinstance(role, str) and role else None
