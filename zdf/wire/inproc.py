"""In-process routes: a task's socket reached by a task of the same process over inproc.

Theory of operation. Tasks publish the ipc:// or tcp:// address they bound, and
a receiver connects to whatever address it is given. When both ends live in one
worker process (a placement group puts a stream's stages together), going
through the kernel costs a copy out and a copy in per batch and a hop through
ZeroMQ's I/O thread on each side. So a data socket that binds also binds an
inproc alias, registered here under its published address; ``route(addr)``
gives a connecting socket of this process that alias instead. Over inproc a
batch sent zero-copy arrives as the sender's own memory: receivers must treat
batches as read-only (``zdf.runtime.pipe`` delivers them read-only).

The table is per process (a forked child starts empty) and an entry goes when
its socket closes, so a task restarted elsewhere is reached at its new address.
"""

from __future__ import annotations

import hashlib
import os

import zmq

_routes: dict[str, str] = {}
_pid = os.getpid()


def _table() -> dict[str, str]:
    global _pid
    if _pid != os.getpid():  # forked: the parent's sockets are not ours
        _routes.clear()
        _pid = os.getpid()
    return _routes


def bind_alias(sock: zmq.Socket[bytes], names: tuple[str, ...] = ()) -> str:
    """Also bind the bound ``sock`` under an inproc name, route its address there (and
    the other ``names`` it is published or dialed by), and return that address."""
    addr = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    alias = "inproc://zdf-" + hashlib.blake2b(addr.encode(), digest_size=12).hexdigest()
    sock.bind(alias)
    table = _table()
    for name in (addr, *names):
        table[name] = alias
    return addr


def drop_alias(*addrs: str) -> None:
    """The socket at ``addrs`` is closing: connect to it by its address again."""
    table = _table()
    for addr in addrs:
        table.pop(addr, None)


def route(addr: str) -> str:
    """The inproc alias of ``addr`` if a socket of this process is bound there, else ``addr``."""
    return _table().get(addr, addr)
