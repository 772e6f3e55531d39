"""Results travel worker to worker: a task's inputs fetched from the workers that hold them.

Theory of operation. Each worker serves its object store (``zdf.executor.objstore``)
on a ROUTER of its own (the *store port*, named in its ``fn_hello``), open to
executors' keys only. A ``StoreServer`` runs that port in a thread with a
reactor of its own, so a worker busy in a long function still hands out its
results, and the copy out of the process is libzmq's (``pack`` sends a numpy
array's buffer without copying it in Python).

A worker given a task whose inputs are elsewhere fetches them with a
``Fetcher``: one DEALER per holder (CURVE client of the executor role), an
``obj_get`` request per input, all in flight at once and answered through the
worker's reactor, so that the worker runs other tasks meanwhile. A value
arrives as zero-copy frames; a numpy array is rebuilt as a view on them. An
input that its holder does not answer (it died, or dropped the value) is asked
of its next holder; with none left the fetch fails, and the worker gives the
task back to the master, which has the input computed again (lineage,
``zdf.master.fndeps``).

Values of any size: both ends' channels send a reply over
``bigmsg.CHUNK_THRESHOLD`` as bounded chunks (``zdf.wire.bigmsg``, on
``zdf.wire.chunked``) and rebuild it on arrival, so a 256 MiB array crosses
the wire's 64 MiB frame limit, and small replies overtake its chunks.

Same host: an ``obj_get`` carries the fetcher's host identity
(``zdf.executor.shmhandoff``); a holder on the same host answers a big value
with the name of a shared-memory file instead of its bytes (``"shm"`` in the
reply), which the fetcher maps; the holder keeps the value as a map of that
file from then on (one copy in memory, shared) and names the same file to the
next reader, until the value is released. A file the fetcher cannot take makes
it ask the same holder again without its identity (``fallbacks``), and that
holder is asked over the network path from then on; a holder that cannot write
the file (its bounds, a full tmpfs) answers over the network path at once.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any

import zmq

from zdf import protocol as P
from zdf.errors import ProtocolError, ZdfError
from zdf.executor import shmhandoff
from zdf.wire.bigmsg import DEFAULT_MAX_VALUE_BYTES
from zdf.wire.payload import pack, unpack
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import DEFER, Call, Channel
from zdf.wire.security import EXECUTORS
from zdf.wire.sockets import make_socket

log = logging.getLogger(__name__)

FETCH_BASE_TIMEOUT = 2.0  # an input's holder silent this long (plus transfer time): next one
FETCH_MIN_RATE = 100e6  # bytes/s a transfer is given time for on top of the base
MAX_PEERS = 64  # holders' sockets kept open; the least recently used goes first
SERVE_POLL = 0.2  # how often the store thread checks whether it should stop

Fetched = Callable[[Any, "ZdfError | None"], None]


class Failed:
    """In a store, the error of a task that failed (its packed frames): a task taking it
    as an input fails with it."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames


class MissingObject(ZdfError):
    """The store has no value under that key (dropped, or never made here)."""


class StoreServer:
    """The store port, served from a thread (see the module docstring)."""

    def __init__(
        self, store: MutableMapping[Any, Any], host: str, shm_root: str = shmhandoff.SHM_ROOT
    ) -> None:
        self.store = store
        self.handoff = shmhandoff.Handoff(shm_root)
        hooks = getattr(store, "on_delete", None)
        if isinstance(hooks, list):
            hooks.append(self.handoff.release)  # a value's shared-memory file goes with it
        self._reactor = Reactor()
        self._channel = Channel(
            self._reactor,
            make_socket(zmq.ROUTER, bind=f"tcp://{host}:*", allow=EXECUTORS),
            {P.OBJ_GET: self._on_get},
            name="store",
        )
        self._channel.enable_chunks()
        self.addr = self._channel.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.served = 0
        self.shm_served = 0  # of them, handed off through shared memory
        self._stopping = False
        self._reactor.call_every(SERVE_POLL, lambda: None)  # wakes the loop to see _stopping
        self._thread = threading.Thread(target=self._run, name="zdf-store", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._reactor.run(until=lambda: self._stopping)
        finally:
            self._channel.close()
            self._reactor.close()
            self.handoff.close()

    def _on_get(self, call: Call) -> Any:
        body = call.body if isinstance(call.body, dict) else {}
        key = P.fields(body, key=object)["key"] if body else None
        try:
            value = self.store[key]
        except (KeyError, TypeError):
            raise MissingObject(f"no object {key!r} here") from None
        self.served += 1
        if isinstance(value, Failed):
            call.reply({"key": key, "failed": True}, value.frames)
            return DEFER
        host = body.get("host")
        if host and host == self.handoff.identity:
            ref = self.handoff.home_of(key) or self._write_home(key, value)
            if ref is not None:
                self.shm_served += 1
                call.reply({"key": key, "shm": ref}, [])
                return DEFER
        call.reply({"key": key}, pack(value))
        return DEFER

    def _write_home(self, key: Any, value: Any) -> dict[str, Any] | None:
        """Write ``value`` to a shared-memory file, and hold it as a map of that file
        from now on (in memory once, shared with the readers); its ref, or None."""
        ref = self.handoff.offer(key, pack(value))
        if ref is None:
            return None
        rehome = getattr(self.store, "rehome", None)
        if rehome is not None:
            try:
                rehome(key, value, unpack(shmhandoff.take(ref, self.handoff.root)))
            except (OSError, ProtocolError) as exc:
                log.info("value %r kept in the heap (%s)", key, exc)
        if key not in self.store:  # released meanwhile: the file goes too
            self.handoff.release(key)
            return None
        return ref

    def close(self) -> None:
        self._stopping = True
        self._reactor.stop()
        self._thread.join(5)


_fetchers: weakref.WeakSet[Fetcher] = weakref.WeakSet()  # this process's


def fetch_counts() -> dict[str, int]:
    """What this process's fetchers did: values fetched, of them taken from shared
    memory, and handoffs fallen back to the network (a task can report them)."""
    counts = {"fetched": 0, "shm_fetched": 0, "fallbacks": 0}
    for fetcher in list(_fetchers):
        for name in counts:
            counts[name] += getattr(fetcher, name)
    return counts


class Fetcher:
    """Fetches values from other workers' store ports (see the module docstring)."""

    def __init__(self, reactor: Reactor, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        _fetchers.add(self)
        self.reactor = reactor
        self.max_value_bytes = max_value_bytes  # the largest value a holder may send
        self.peers: dict[str, Channel] = {}  # store address: its DEALER, least recent first
        self.fetched = 0
        self.shm_fetched = 0  # of them, taken from shared memory (same host)
        self.fallbacks = 0  # handoffs that could not be taken: fetched again over the network
        self.shm_root = shmhandoff.SHM_ROOT
        self.identity = shmhandoff.host_identity()
        self._no_shm: set[str] = set()  # holders whose handoffs could not be taken

    def fetch(self, key: Any, addrs: list[str], nbytes: int, done: Fetched) -> None:
        """Get ``key`` from the first of ``addrs`` that has it; ``done(value, error)``."""
        if not addrs:
            done(None, MissingObject(f"no worker holds input {key!r} any more"))
            return
        addr, rest = addrs[0], addrs[1:]
        timeout = FETCH_BASE_TIMEOUT + nbytes / FETCH_MIN_RATE
        ask: dict[str, Any] = {"key": key}
        if self.identity and addr not in self._no_shm:
            ask["host"] = self.identity

        def answered(result: Any, error: ZdfError | None) -> None:
            if error is None:
                try:
                    value = self._value(result)
                except ProtocolError as exc:
                    error = exc
                except OSError as exc:  # a handoff not to be had: over the network then
                    log.info("input %r not taken from shared memory (%s)", key, exc)
                    self.fallbacks += 1
                    self._no_shm.add(addr)
                    self.fetch(key, addrs, nbytes, done)
                    return
                else:
                    self.fetched += 1
                    done(value, None)
                    return
            log.info("input %r not had from %s (%s); %d holders left", key, addr, error, len(rest))
            if not isinstance(error, MissingObject):
                self._forget(addr)  # a fresh connection for whoever asks it next
            self.fetch(key, rest, nbytes, done)

        self._peer(addr).request(P.OBJ_GET, ask, timeout=timeout, callback=answered)

    def _value(self, result: Any) -> Any:
        if isinstance(result, dict) and "shm" in result:  # a handoff: no frames with it
            value = unpack(shmhandoff.take(result["shm"], self.shm_root))
            self.shm_fetched += 1
            return value
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
            raise ProtocolError("a store reply without the value's frames")
        head, frames = result
        if head.get("failed"):
            return Failed([bytes(f.buffer) if hasattr(f, "buffer") else f for f in frames])
        return unpack(frames)

    def _peer(self, addr: str) -> Channel:
        channel = self.peers.pop(addr, None)
        if channel is None:
            if len(self.peers) >= MAX_PEERS:
                self._forget(next(iter(self.peers)))
            sock = make_socket(zmq.DEALER, connect=addr, sndhwm=0, rcvhwm=0, server_role="executor")
            channel = Channel(self.reactor, sock, {}, name="fetch")
            channel.enable_chunks(self.max_value_bytes)
        self.peers[addr] = channel  # most recent last
        return channel

    def _forget(self, addr: str) -> None:
        self._no_shm.discard(addr)
        channel = self.peers.pop(addr, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        for addr in list(self.peers):
            self._forget(addr)
