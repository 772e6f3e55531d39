"""``zdf.connect``: submit Python functions to the cluster and get futures back.

Theory of operation. A ``Client`` owns one DEALER to the master, served by a
background I/O thread; ``submit`` only packs the arguments, registers a future
and appends to an outbox, waking the I/O thread when it sleeps. The I/O thread
sends whatever has piled up as one ``fn_submit`` batch and completes futures
from ``fn_result`` batches. At most ``max_inflight`` tasks are outstanding:
``submit`` blocks beyond that, so a client submitting a million tasks keeps
bounded memory.

Functions are named by import path (``package.module:function``) and must be
installed on the executors; a callable is turned into its path. Arguments and
results travel as msgpack with numpy arrays as zero-copy frames.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zmq

from zdf import protocol as P
from zdf.client.futures import Future, remote_exception
from zdf.errors import ProtocolError, ZdfError
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.payload import pack, unpack
from zdf.wire.rpc import RpcClient
from zdf.wire.sockets import close_socket, make_socket

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 20_000
MAX_BATCH = 512
MAP_CHUNK_FN = "zdf.client.chunks:run_chunk"


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
    def __init__(
        self,
        master_addr: str | list[str],
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_retries: int = 3,
        timeout: float = 10.0,
    ) -> None:
        self.master_addr = find_leader(master_addr, timeout)
        self.max_retries = max_retries
        self.timeout = timeout
        self._tids = itertools.count(1)
        self._futures: dict[int, Future] = {}
        self._outbox: deque[tuple[int, str, int, list[Any]]] = deque()
        self._cancels: deque[int] = deque()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sleeping = threading.Event()
        self._closed = False
        self.identity = b"c-" + uuid.uuid4().bytes
        self._sock = make_socket(
            zmq.DEALER, connect=self.master_addr, identity=self.identity, sndhwm=0, rcvhwm=0
        )
        self._thread = threading.Thread(target=self._io_loop, name="zdf-client-io", daemon=True)
        self._thread.start()

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
        path = function_path(fn)
        frames = pack([args, kwargs])
        retries = self.max_retries if max_retries is None else max_retries
        if not self._slots.acquire(timeout=self.timeout * 6):
            raise ZdfError("submission backpressure: no task finished for too long")
        tid = next(self._tids)
        future = Future(self, tid)
        self._futures[tid] = future
        self._outbox.append((tid, path, retries, frames))
        self._wake()
        return future

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
        path = function_path(fn)
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
                window.append(self.submit(MAP_CHUNK_FN, path, chunk))

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
        close_socket(self._sock)
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
        self._cancels.append(tid)
        self._wake()

    def _wake(self) -> None:
        if self._sleeping.is_set():
            self._sleeping.clear()
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    def _io_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        while not self._closed:
            self._flush()
            self._sleeping.set()
            if self._outbox or self._cancels:
                self._sleeping.clear()
                continue
            events = dict(poller.poll(1000))
            self._sleeping.clear()
            if self._wake_r.fileno() in events:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            if self._sock in events:
                self._receive()

    def _flush(self) -> None:
        while self._outbox:
            header: list[list[Any]] = []
            frames: list[Any] = []
            while self._outbox and len(header) < MAX_BATCH:
                tid, path, retries, task_frames = self._outbox.popleft()
                header.append([tid, path, retries, len(task_frames)])
                frames.extend(task_frames)
            self._sock.send_multipart(
                [encode(Kind.EVENT, P.FN_SUBMIT, 0, {"tasks": header}), *frames], copy=False
            )
        if self._cancels:
            tids = list(self._cancels)
            self._cancels.clear()
            self._sock.send(encode(Kind.EVENT, P.FN_CANCEL, 0, {"tids": tids}))

    def _receive(self) -> None:
        for _ in range(1024):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(parts[0])
            except ProtocolError:
                continue
            if msg.op == P.FN_RESULT and isinstance(msg.body, dict):
                self._complete(msg.body.get("results") or [], parts[1:])
            elif msg.kind is Kind.ERROR:
                log.warning("master refused a request: %s", msg.body)

    def _complete(self, results: list[Any], frames: list[bytes]) -> None:
        offset = 0
        for tid, ok, nframes in results:
            value_frames = frames[offset : offset + nframes]
            offset += nframes
            future = self._futures.pop(tid, None)
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
