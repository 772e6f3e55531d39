"""Shared data sockets: every pipe of a process rides one socket per peer process.

Theory of operation
-------------------
A worker process may host a thousand tasks (the producers of a 1,000-table job)
and a task may read a thousand pipes (a binlog reads one per table). A socket per
port and per pipe cost a bind or a connect each, descriptors, a handshake in
libzmq's I/O thread, and a place in every poll of the reactor. So the pipes of a
process share sockets instead:

* ``Hub``: one bound ROUTER per (reactor, place to bind) serves every sending
  port (``zdf.runtime.pipe.OutPort``) of the process. A port is known by an id
  unique in the process, and its published address is the hub's with that id
  after a ``#``: ``ipc:///dev/shm/zdf-…/3f2a….sock#17``.
* ``Dialer``: one DEALER per (reactor, hub address) carries every receiving pipe
  (``InPort``) of the process that reads from a port of that hub. A pipe is known
  by an id unique in the process.

On several hosts a hub binds tcp:// and, beside it, an ipc:// twin that processes
of its own host dial instead (``zdf.runtime.hubaddr``: the address carries both and
the binder's host identity; the dialer picks, and says which in ``transport``).

Frames (the pipe's own frames, ``zdf.runtime.pipe``, after the routing ones)::

    dialer -> hub   [port id, pipe id, env]          (the ROUTER adds the peer)
    hub -> dialer   [pipe id, env] or [pipe id, env, rows]

Each wake-up reads up to ``MAX_MESSAGES_PER_WAKEUP`` messages and hands each
endpoint its own in one call, in arrival order: the owner's guard (``wrap``) runs
once per burst, so acks and output are still coalesced per burst. A message for
an id that is not (or no longer) attached is counted and dropped, as a closed
socket would have dropped it: the pipe protocol repairs that by subscribing again.

Flow control is the pipes' own (credits): what a hub queues for a peer is bounded
by the windows of the pipes to it, so the shared sockets have no high-water mark
(a ROUTER at its mark drops without a word, which a pipe would see as a hang).

Positions, replay, fencing by attempt and exactly-once stay per pipe: a port
keeps its subscribers by (peer, pipe id) and a pipe checks every batch's
position, exactly as when each had its own socket.

Lifetime: a hub binds when its first port attaches and closes when its last one
detaches; a dialer connects with its first pipe and closes with its last. A
socket closes with the longest linger any of its endpoints asked for when it
left, so what a finished task sent last still goes out. Over inproc (both ends in
one process, ``zdf.wire.inproc``) batches stay zero-copy, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from zdf.errors import ProtocolError
from zdf.runtime import hubaddr
from zdf.wire import inproc
from zdf.wire.hostid import host_identity
from zdf.wire.reactor import Reactor
from zdf.wire.security import EXECUTORS
from zdf.wire.sockets import bind_also, close_socket, make_socket

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_WAKEUP = 1024
"""Bounded so that a busy hub cannot starve the reactor's other sockets."""

SEP = "#"
"""Between a hub's address and a port's id in a published address."""

Message = list[Any]
"""What an endpoint is handed: the frames after the id (hub: peer, pipe, env)."""
Deliver = Callable[[list[Message]], None]

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)

_ids = itertools.count(1)
_hubs: dict[tuple[int, str], Hub] = {}
_dialers: dict[tuple[int, str], Dialer] = {}
dialed: Counter[str] = Counter()
"""Dialers this process opened, by transport (``hubaddr.INPROC``, ``IPC``, ``TCP``)."""


def new_id() -> bytes:
    """An endpoint id unique in this process (ports and pipes alike)."""
    return str(next(_ids)).encode()


def split(addr: str) -> tuple[str, bytes]:
    """A port's published address -> (its hub's address, the port id)."""
    url, sep, port = addr.rpartition(SEP)
    if not sep or not url or not port:
        raise ProtocolError(f"{addr!r} is not a pipe address (hub{SEP}port)")
    return url, port.encode()


def bind_url(spec: str) -> str:
    """Where a hub binds: ``spec`` itself, or for ``ipc://DIR/`` a new socket file
    in DIR (a name unique to this process and hub). (``tcp://HOST:*?ipc=DIR/``, tcp://
    and an ipc:// twin in DIR, is ``Hub``'s to split: ``zdf.runtime.hubaddr``.)"""
    if not (spec.startswith("ipc://") and spec.endswith("/")):
        return spec
    key = f"{os.getpid()}/{next(_ids)}"
    return f"{spec}{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.sock"


class _Shared:
    """A socket on a reactor that endpoints attach to and detach from."""

    sock: zmq.Socket[bytes]

    def __init__(self, reactor: Reactor, key: tuple[int, str]) -> None:
        self.reactor = reactor
        self.key = key
        self.endpoints: dict[bytes, Deliver] = {}
        self.stats: Counter[str] = Counter()
        self._linger = 0.0

    @property
    def closed(self) -> bool:
        return self.sock.closed

    def attach(self, endpoint: bytes, deliver: Deliver) -> None:
        self.endpoints[endpoint] = deliver

    def detach(self, endpoint: bytes, linger: float = 0.0) -> None:
        """Forget ``endpoint``; the last one closes the socket (after ``linger``, or the
        longest linger asked for by any endpoint that left before)."""
        if self.endpoints.pop(endpoint, None) is None:
            return
        self._linger = max(self._linger, linger)
        if not self.endpoints:
            self._close()

    def _close(self) -> None:
        self._forget()
        self.reactor.remove_reader(self.sock)
        close_socket(self.sock, self._linger)

    def _forget(self) -> None:
        raise NotImplementedError

    def _read(self, id_at: int, frames: int) -> None:
        """Read what is waiting; hand each endpoint its messages, in arrival order.
        A message has ``frames`` (or ``frames + 1``) frames, the endpoint's id at ``id_at``."""
        batches: dict[bytes, list[Message]] = {}
        sock = self.sock
        recv = sock.recv
        for _ in range(MAX_MESSAGES_PER_WAKEUP):
            if sock.closed:
                return
            try:  # (recv_multipart's flag enums cost more than the frames, here)
                frame = recv(_NOBLOCK, copy=False)
                parts = [frame]
                while frame.more:
                    frame = recv(_NOBLOCK, copy=False)
                    parts.append(frame)
            except zmq.ZMQError:  # Again: drained
                break
            if not frames <= len(parts) <= frames + 1:
                self.stats["malformed"] += 1
                continue
            endpoint = parts.pop(id_at).bytes
            batches.setdefault(endpoint, []).append(parts)
        for endpoint, messages in batches.items():
            deliver = self.endpoints.get(endpoint)
            if deliver is None:
                self.stats["unknown"] += len(messages)
                continue
            try:
                deliver(messages)
            except Exception:  # an owner's guard fails its task; one without must not
                self.stats["failed"] += 1  # cost the other endpoints their messages
                log.exception("a pipe endpoint failed on its messages")


class Hub(_Shared):
    """The bound ROUTER of a process's sending ports (see the module docstring)."""

    def __init__(self, reactor: Reactor, spec: str, key: tuple[int, str]) -> None:
        super().__init__(reactor, key)
        names = self._bind(*hubaddr.split_spec(spec))
        # Receivers in this process skip the kernel, by any name they have for the hub
        # (the twin's path too: a published address's host may be rewritten, advertised).
        bound = inproc.bind_alias(self.sock, names)
        self.url = names[0] if names else bound
        self._routes = (bound, *names)
        ipc = names[1] if names else bound
        self._file = ipc[len("ipc://") :] if ipc.startswith("ipc://") else ""
        reactor.add_reader(self.sock, self._on_readable)

    def _bind(self, primary: str, twin_dir: str) -> tuple[str, ...]:
        """Bind ``primary`` alone, or first a plain ipc:// twin in ``twin_dir`` and then
        ``primary`` beside it (CURVE if secured); return the names the hub goes by
        besides its bound address (with a twin: its published address, the twin)."""
        # No high-water mark: the pipes' credits bound what is queued per peer.
        options: dict[str, Any] = {"sndhwm": 0, "rcvhwm": 0, "allow": EXECUTORS}
        if twin_dir:
            try:
                self.sock = make_socket(zmq.ROUTER, bind=bind_url(f"ipc://{twin_dir}"), **options)
            except zmq.ZMQError as exc:  # the directory gone: tcp:// alone still serves all
                log.warning("no ipc:// twin for data pipes in %s: %s", twin_dir, exc)
            else:
                twin = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
                try:
                    tcp = bind_also(self.sock, primary, allow=EXECUTORS)
                except BaseException:
                    close_socket(self.sock)
                    raise
                return str(hubaddr.HubAddress(tcp, twin[len("ipc://") :], host_identity())), twin
        self.sock = make_socket(zmq.ROUTER, bind=bind_url(primary), **options)
        return ()

    def address(self, port: bytes) -> str:
        return f"{self.url}{SEP}{port.decode()}"

    def send(self, peer: bytes, pipe: bytes, env: bytes, rows: Any = None) -> None:
        """[pipe, env] or, with ``rows`` (sent zero-copy), [pipe, env, rows] to ``peer``."""
        send = self.sock.send
        send(peer, _MORE)
        send(pipe, _MORE)
        if rows is None:
            send(env, _NOBLOCK)
        else:
            send(env, _MORE)
            send(rows, _NOBLOCK, copy=False)

    def _close(self) -> None:
        super()._close()
        if self._file:  # libzmq leaves it (and a dialer given it later must find nothing)
            with contextlib.suppress(OSError):
                os.unlink(self._file)

    def _forget(self) -> None:
        inproc.drop_alias(*self._routes)
        if _hubs.get(self.key) is self:
            del _hubs[self.key]

    def _on_readable(self) -> None:
        self._read(1, 4)  # [peer, port, pipe, env]: handed (peer, pipe, env)


class Dialer(_Shared):
    """A DEALER to one hub, carrying every pipe of this process that reads from it."""

    def __init__(self, reactor: Reactor, url: str, key: tuple[int, str]) -> None:
        super().__init__(reactor, key)
        self.url = url
        target, self.transport = hubaddr.choose(url)
        self.sock = make_socket(zmq.DEALER, connect=target, sndhwm=0, rcvhwm=0)
        dialed[self.transport] += 1
        log.debug("pipes to %s over %s", url, self.transport)
        reactor.add_reader(self.sock, self._on_readable)

    def send(self, port: bytes, pipe: bytes, env: bytes) -> None:
        send = self.sock.send
        send(port, _MORE)
        send(pipe, _MORE)
        send(env, _NOBLOCK)

    def _forget(self) -> None:
        if _dialers.get(self.key) is self:
            del _dialers[self.key]

    def _on_readable(self) -> None:
        self._read(0, 2)  # [pipe, env] or [pipe, env, rows]: handed (env[, rows])


def hub(reactor: Reactor, spec: str) -> Hub:
    """The hub of ``reactor`` that binds at ``spec`` (made, and bound, if none is open)."""
    key = (id(reactor), spec)
    found = _hubs.get(key)
    if found is None or found.closed:
        found = _hubs[key] = Hub(reactor, spec, key)
    return found


def dialer(reactor: Reactor, url: str) -> Dialer:
    """The dialer of ``reactor`` to the hub at ``url`` (made if none is open)."""
    key = (id(reactor), url)
    found = _dialers.get(key)
    if found is None or found.closed:
        found = _dialers[key] = Dialer(reactor, url, key)
    return found


def open_sockets() -> int:
    """Hubs and dialers open in this process (for tests and figures)."""
    return sum(not h.closed for h in _hubs.values()) + sum(not d.closed for d in _dialers.values())
