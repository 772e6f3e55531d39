"""``zdf.connect``: submit Python functions to the cluster and get futures back.

Theory of operation. A ``Client`` keeps a future per task in flight and
completes it from the results its ``Transport`` (``zdf.client.transport``: the
sockets, the I/O thread, how a lone task skips every thread hand-off) hands
back. At most ``max_inflight`` tasks are outstanding: ``submit`` blocks beyond
that, so a client submitting a million tasks keeps bounded memory.

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
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zdf import protocol as P
from zdf.client.chunks import PickledChunk
from zdf.client.futures import Future, remote_exception
from zdf.client.transport import Transport, find_leader, master_endpoints
from zdf.errors import ProtocolError, ZdfError
from zdf.wire.payload import pack, unpack

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 20_000
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
        endpoints = master_endpoints(master_addr)
        self.master_addr = find_leader(endpoints, timeout)
        self.max_retries = max_retries
        self.timeout = timeout
        self._tids = itertools.count(1)
        self._futures: dict[int, Future] = {}
        self._pickles: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._io = Transport(
            self.master_addr,
            self._complete,
            direct_results=direct_results,
            timeout=timeout,
            endpoints=endpoints,
            on_lost=self._lost,
        )
        self.allow_pickle = bool(self._io.hello.get("allow_pickle"))

    @property
    def reply_addr(self) -> str:
        """Where workers send this client's results ("" when through the master)."""
        return self._io.reply_addr

    @property
    def leased_worker(self) -> str | None:
        """Where this client's lone tasks go past the master (None: through it)."""
        return self._io.leased_worker

    @property
    def dropped(self) -> int:
        """Messages dropped on arrival: malformed, or results not from a worker."""
        return self._io.dropped

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
        if self._io.closed:
            raise ZdfError("client is closed")
        path, frames = self._encode_call(fn, args, kwargs)
        retries = self.max_retries if max_retries is None else max_retries
        if not self._slots.acquire(timeout=self.timeout * 6):
            raise ZdfError("submission backpressure: no task finished for too long")
        tid = next(self._tids)
        future = Future(self, tid)
        self._futures[tid] = future  # before sending: the answer may come at once
        self._io.send((tid, path, retries, frames), nothing_in_flight=len(self._futures) == 1)
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
        if self._io.closed:
            return
        self._io.close()
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

    # -- internals (called by Future and by the transport) ---------------------
    def _take(self, tid: int) -> Future | None:
        """Take ``tid`` off the books (its slot freed); None if it was no longer there."""
        future = self._futures.pop(tid, None)
        self._io.forget(tid)
        if future is not None:
            self._slots.release()
        return future

    def _cancel(self, tid: int) -> None:
        self._take(tid)
        self._io.cancel(tid)

    def _wait(self, future: Future, timeout: float | None) -> None:
        self._io.wait_here(future.done, timeout)

    def _attend(self, future: Future) -> None:
        self._io.attend(future.tid)

    def _lost(self, error: ZdfError) -> None:
        """No master has our tasks any more and none can be found: fail them."""
        for tid in list(self._futures):
            future = self._take(tid)
            if future is None:
                continue
            try:
                future.set_exception(error)
            except concurrent.futures.InvalidStateError:
                pass  # canceled by the caller meanwhile

    @property
    def failovers(self) -> int:
        """Times the tasks in flight were submitted again to a new master."""
        return self._io.failovers

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
            future = self._take(tid)
            if future is None:
                continue  # canceled meanwhile
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


def connect(
    master_addr: str | list[str] = "127.0.0.1:10240",
    *,
    meta_endpoints: str | list[str] | None = None,
    **options: Any,
) -> Client:
    """A client of the master at ``host:port`` (or the leader of a comma-separated list);
    given ``meta_endpoints``, of the masters the metastore's discovery records name."""
    if meta_endpoints:
        from zdf.config import parse_addr_list
        from zdf.discovery import find_masters

        master_addr = find_masters(parse_addr_list(meta_endpoints))
    return Client(master_addr, **options)
