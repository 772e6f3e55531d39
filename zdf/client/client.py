"""``zdf.connect``: submit Python functions to the cluster and get futures back.

Theory of operation. A ``Client`` owns one DEALER to the master and one PULL
on which workers send results straight back (one hop fewer than through the
master; its address travels with every ``fn_submit`` batch). A background I/O
thread reads both and completes futures from ``fn_result`` batches.

Sending: a task submitted while nothing else is in flight (the synchronous
``submit(...).result()`` pattern) is sent at once by the calling thread, with
no hand-off. Otherwise ``submit`` appends to an outbox and wakes the I/O
thread, which sends whatever has piled up as one ``fn_submit`` batch: a burst
costs the master one message per few hundred tasks. One lock orders both
paths, so tasks reach the master in submission order. At most
``max_inflight`` tasks are outstanding: ``submit`` blocks beyond that, so a
client submitting a million tasks keeps bounded memory.

Receiving: a thread blocked in ``Future.result()`` reads the result socket
itself when no one else does, so a lone task's answer wakes the waiting thread
directly instead of passing through the I/O thread (a thread hand-off costs
about as much as a network hop). Each socket has a lock, held by whichever
thread uses it; the I/O thread waits on the sockets' file descriptors (an
OS-level poll, which touches no socket) and reads only when it gets the lock.
While the only task in flight is one the caller sent itself ("lone"), the I/O
thread leaves the results to the caller, so that it does not wake up and
compete for the GIL on every answer; a callback, ``await`` or ``as_completed``
on that future hands it back to the I/O thread at once, and any other waiting
style (polling ``done()``) is served by a slow fallback poll.

Functions are named by import path (``package.module:function``) and must be
installed on the executors; a callable is turned into its path. Where the
cluster allows it (``allow-pickle``), a function that has no import path
(a lambda, a closure, a ``__main__`` function) is shipped with cloudpickle.
Arguments and results travel as msgpack with numpy arrays as zero-copy frames.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from zdf import protocol as P
from zdf.client.chunks import PickledChunk
from zdf.client.futures import Future, remote_exception
from zdf.errors import ProtocolError, ZdfError
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.payload import pack, unpack
from zdf.wire.rpc import RpcClient
from zdf.wire.sockets import close_socket, endpoint, make_socket

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 20_000
MAX_BATCH = 512
MAP_CHUNK_FN = "zdf.client.chunks:run_chunk"

MAX_READ = 1024
WAIT_SLICE_MS = 5  # a thread reading its own result also checks for answers via the master
IDLE_POLL_MS = 1000
LONE_FALLBACK_MS = 10  # results of a lone task whose caller does not call result()

Outgoing = tuple[int, str, int, list[Any]]  # tid, function, retries, frames


def function_path(fn: Callable[..., Any] | str) -> str:
    """``module:qualname`` of an importable function (or the string given)."""
    if isinstance(fn, str):
        if ":" not in fn:
            raise ValueError(f"function path {fn!r} must be 'module:name'")
        return fn
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValueError(
            f"{fn!r} cannot be named by import path: define it in a module the executors can "
            "import (lambdas, nested functions and __main__ functions cannot travel)"
        )
    return f"{module}:{qualname}"


class Client:
    """A connection to the cluster for function tasks (see the module docstring).

    ``direct_results=False`` has results come back through the master, for a
    client that the workers cannot reach (behind NAT or a firewall).
    """

    def __init__(
        self,
        master_addr: str | list[str],
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_retries: int = 3,
        timeout: float = 10.0,
        direct_results: bool = True,
    ) -> None:
        self.master_addr = find_leader(master_addr, timeout)
        self.max_retries = max_retries
        self.timeout = timeout
        self._tids = itertools.count(1)
        self._futures: dict[int, Future] = {}
        self._outbox: deque[Outgoing] = deque()
        self._send_lock = threading.Lock()  # the DEALER to the master: sends and receives
        self._recv_lock = threading.Lock()  # the result PULL
        self._cancels: deque[int] = deque()
        self._pickles: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._closed = False
        self.identity = b"c-" + uuid.uuid4().bytes
        self._sock = make_socket(
            zmq.DEALER, connect=self.master_addr, identity=self.identity, sndhwm=0, rcvhwm=0
        )
        self._results: zmq.Socket[bytes] | None = None
        self.reply_addr = ""
        # Workers put it in every result they send here: anything else on the port is dropped.
        self._token = os.urandom(8).hex()
        self.dropped = 0  # messages dropped on arrival (malformed, or not from a worker)
        try:
            if direct_results:
                self._results = make_socket(
                    zmq.PULL, bind=f"tcp://{reply_host(self.master_addr)}:*", rcvhwm=0
                )
                self.reply_addr = self._results.getsockopt_string(zmq.LAST_ENDPOINT)
            hello = self._hello()
        except BaseException:
            close_socket(self._sock)
            close_socket(self._results)
            raise
        self.allow_pickle = bool(hello.get("allow_pickle"))
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sleeping = threading.Event()
        self._lone: int | None = None  # the one task in flight, sent by its caller
        self._io_waits_for_results = False  # the I/O thread found the results socket taken
        self._thread = threading.Thread(target=self._io_loop, name="zdf-client-io", daemon=True)
        self._thread.start()

    def _hello(self) -> dict[str, Any]:
        """Ask the master (before the I/O thread owns the socket) what it accepts."""
        self._sock.send(encode(Kind.REQUEST, P.FN_CLIENT, 1, {}))
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._sock.poll(max(1, int(remaining * 1000))):
                continue
            try:
                msg = decode(self._sock.recv())
            except ProtocolError:
                continue
            if msg.rid != 1:
                continue
            if msg.kind is Kind.ERROR or not isinstance(msg.body, dict):
                raise ZdfError(f"master at {self.master_addr} refused the client: {msg.body}")
            return msg.body
        raise ZdfError(f"master at {self.master_addr} did not answer within {self.timeout} s")

    # -- public API ---------------------------------------------------------
    def submit(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; returns a future at once."""
        if self._closed:
            raise ZdfError("client is closed")
        path, frames = self._encode_call(fn, args, kwargs)
        retries = self.max_retries if max_retries is None else max_retries
        if not self._slots.acquire(timeout=self.timeout * 6):
            raise ZdfError("submission backpressure: no task finished for too long")
        tid = next(self._tids)
        future = Future(self, tid)
        with self._send_lock:
            lone = not self._futures and not self._outbox
            self._futures[tid] = future
            if lone:
                self._lone = tid
                self._send_tasks([(tid, path, retries, frames)])
            else:
                self._lone = None
                self._outbox.append((tid, path, retries, frames))
        if not lone:
            self._wake()
        return future

    def _encode_call(
        self, fn: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, list[Any]]:
        try:
            return function_path(fn), pack([args, kwargs])
        except ValueError as exc:
            if isinstance(fn, str) or not callable(fn):
                raise
            if not self.allow_pickle:
                raise ValueError(
                    f"{exc}; the cluster does not accept pickled functions "
                    "(allow-pickle is false on its master)"
                ) from None
        return P.PICKLED_FN, [self._pickled(fn), *pack([args, kwargs])]

    def _pickled(self, fn: Callable[..., Any]) -> bytes:
        import cloudpickle  # only when the cluster allows pickles

        try:
            blob = self._pickles.get(fn)
        except TypeError:  # not weakly referenceable
            return cloudpickle.dumps(fn)  # type: ignore[no-any-return]
        if blob is None:
            blob = self._pickles[fn] = cloudpickle.dumps(fn)
        return blob

    def map(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Results of ``fn(item)`` for every item, in order, submitted ahead lazily.

        Items are grouped ``chunksize`` to a task (automatic when None): one
        round trip per chunk instead of per item.
        """
        try:
            chunk_fn: Callable[..., Any] | str = MAP_CHUNK_FN
            chunk_args: tuple[Any, ...] = (function_path(fn),)
        except ValueError:
            if isinstance(fn, str) or not self.allow_pickle:
                raise
            chunk_fn, chunk_args = PickledChunk(fn), ()
        size = chunksize or 16
        if size < 1:
            raise ValueError("chunksize must be at least 1")
        window: deque[Future] = deque()
        ahead = max(4, 2048 // size)
        items = iter(iterable)

        def refill() -> None:
            while len(window) < ahead:
                chunk = list(itertools.islice(items, size))
                if not chunk:
                    return
                window.append(self.submit(chunk_fn, *chunk_args, chunk))

        refill()
        while window:
            results = window.popleft().result(timeout)
            refill()
            yield from results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._thread.join(5)
        # A thread still reading its result lets go within a wait slice.
        locked = self._recv_lock.acquire(timeout=1)
        close_socket(self._sock)
        close_socket(self._results)
        if locked:
            self._recv_lock.release()
        self._wake_r.close()
        self._wake_w.close()
        for future in list(self._futures.values()):
            if not future.done():
                future.set_exception(ZdfError("client closed before the task finished"))
        self._futures.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return len(self._futures)

    # -- internals ----------------------------------------------------------
    def _cancel(self, tid: int) -> None:
        if self._futures.pop(tid, None) is not None:
            self._slots.release()
        if self._lone == tid:
            self._lone = None
        self._cancels.append(tid)
        self._wake()

    def _wake(self) -> None:
        if self._sleeping.is_set():
            self._sleeping.clear()
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    def _wait(self, future: Future, timeout: float | None) -> None:
        """Called by ``Future.result``: read results in this thread until ``future`` is
        done, if no other thread is reading them (else the caller waits as usual)."""
        sock = self._results
        if sock is None or threading.current_thread() is self._thread:
            return
        if not self._recv_lock.acquire(blocking=False):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not future.done() and not self._closed:
                slice_ms = WAIT_SLICE_MS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    slice_ms = min(slice_ms, max(1, int(left * 1000)))
                # In slices: the answer may also come through the master (the I/O thread).
                if sock.poll(slice_ms, zmq.POLLIN):
                    self._receive(sock)
        finally:
            self._recv_lock.release()
            if self._io_waits_for_results:
                self._io_waits_for_results = False
                self._wake()

    def _attend(self, future: Future) -> None:
        """Someone will wait for ``future`` without reading results: the I/O thread must."""
        if self._lone == future.tid:
            self._lone = None
            self._wake()

    def _io_loop(self) -> None:
        # Raw descriptors, so that polling never touches a socket another thread may be
        # using. They are edge-triggered: after any wake-up, read until EAGAIN.
        master_fd = self._sock.getsockopt(zmq.FD)
        results_fd = self._results.getsockopt(zmq.FD) if self._results is not None else None
        wake_fd = self._wake_r.fileno()
        poller = zmq.Poller()
        poller.register(master_fd, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        watching = False  # results_fd registered
        more = True
        timed_out = False
        while not self._closed:
            self._flush()
            want = False
            if more:
                more = self._drain(self._sock, self._send_lock)
            if self._results is not None and (more or timed_out or self._lone is None):
                # A lone task's caller reads its own result; the fallback poll covers a
                # caller that never does.
                if self._drain(self._results, self._recv_lock):
                    more = True
                want = self._lone is None and not self._io_waits_for_results
            if results_fd is not None and want != watching:
                if want:
                    poller.register(results_fd, zmq.POLLIN)
                else:
                    poller.unregister(results_fd)
                watching = want
            self._sleeping.set()
            # Checked after announcing sleep: whoever changes these afterwards wakes us.
            handed_back = (
                results_fd is not None
                and not watching
                and self._lone is None
                and not self._io_waits_for_results
            )
            if self._outbox or self._cancels or handed_back:
                self._sleeping.clear()
                more = True
                continue
            if more:
                timeout = 0
            elif self._lone is not None or self._io_waits_for_results:
                timeout = LONE_FALLBACK_MS
            else:
                timeout = IDLE_POLL_MS
            events = poller.poll(timeout)
            self._sleeping.clear()
            timed_out = not events
            for fd, _ in events:
                if fd == wake_fd:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
            more = True  # something may have changed: read (cheap when nothing is there)

    def _drain(self, sock: zmq.Socket[bytes], lock: threading.Lock) -> bool:
        """Read what is there if no other thread holds the socket; True when more may be."""
        if not lock.acquire(blocking=False):
            if sock is self._results:
                self._io_waits_for_results = True  # the holder wakes us when it lets go
            return False
        try:
            return self._receive(sock)
        finally:
            lock.release()

    def _flush(self) -> None:
        while self._outbox:
            with self._send_lock:
                batch = [self._outbox.popleft() for _ in range(min(MAX_BATCH, len(self._outbox)))]
                self._send_tasks(batch)
        if self._cancels:
            tids = list(self._cancels)
            self._cancels.clear()
            with self._send_lock:
                self._sock.send(encode(Kind.EVENT, P.FN_CANCEL, 0, {"tids": tids}))

    def _send_tasks(self, batch: list[Outgoing]) -> None:
        """One ``fn_submit``; the caller holds ``_send_lock``."""
        header: list[list[Any]] = []
        frames: list[Any] = []
        for tid, path, retries, task_frames in batch:
            header.append([tid, path, retries, len(task_frames)])
            frames.extend(task_frames)
        reply = f"{self.reply_addr}#{self._token}" if self.reply_addr else ""
        body = {"tasks": header, "reply": reply}
        self._sock.send_multipart([encode(Kind.EVENT, P.FN_SUBMIT, 0, body), *frames], copy=False)

    def _receive(self, sock: zmq.Socket[bytes]) -> bool:
        """Read up to a bound of messages; True if the bound was hit (more may wait)."""
        for _ in range(MAX_READ):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            try:
                msg = decode(parts[0])
                if msg.op == P.FN_RESULT and isinstance(msg.body, dict):
                    if sock is self._results and msg.body.get("token") != self._token:
                        raise ProtocolError("a result without this client's token")
                    self._complete(msg.body.get("results"), parts[1:])
                elif msg.kind is Kind.ERROR:
                    log.warning("master refused a request: %s", msg.body)
            except ProtocolError as exc:
                self.dropped += 1
                log.debug("dropped a message: %s", exc)
        return True

    def _complete(self, results: Any, frames: list[bytes]) -> None:
        if not isinstance(results, list):
            raise ProtocolError("results is not a list")
        offset = 0
        for entry in results:
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ProtocolError("a result entry is not [tid, ok, nframes]")
            tid, ok, nframes = entry
            if not isinstance(nframes, int) or not 0 < nframes <= len(frames) - offset:
                raise ProtocolError("result frames missing")
            value_frames = frames[offset : offset + nframes]
            offset += nframes
            future = self._futures.pop(tid, None)
            if tid == self._lone:
                self._lone = None
            if future is None:
                continue  # canceled meanwhile
            self._slots.release()
            try:
                value = unpack(value_frames)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(remote_exception(value))
            except ProtocolError as exc:
                future.set_exception(exc)
            except concurrent.futures.InvalidStateError:
                pass  # canceled by the caller while the result was on its way


def reply_host(master_addr: str) -> str:
    """The address of this host as the master's network sees it (where workers can
    reach the client): the local end of a route to the master."""
    host = endpoint(master_addr).split("://", 1)[1].rpartition(":")[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1", "*", "0.0.0.0"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])


def find_leader(master_addr: str | list[str], timeout: float) -> str:
    """The leading master among ``host:port[,host:port...]`` (the only one when just one)."""
    endpoints = master_addr.split(",") if isinstance(master_addr, str) else list(master_addr)
    endpoints = [e.strip() for e in endpoints if e.strip()]
    if len(endpoints) == 1:
        return endpoints[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr in endpoints:
            try:
                with RpcClient(addr, timeout=0.5) as probe:
                    if probe.call(P.PING, retry=False).get("leading"):
                        return addr
            except ZdfError:
                continue
    raise ZdfError(f"no leading master among {', '.join(endpoints)}")


def connect(master_addr: str | list[str] = "127.0.0.1:10240", **options: Any) -> Client:
    """A client of the master at ``host:port`` (or the leader of a comma-separated list)."""
    return Client(master_addr, **options)
