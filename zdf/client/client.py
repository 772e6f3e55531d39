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
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from zdf import protocol as P
from zdf.client import graph, jobs
from zdf.client.chunks import PickledChunk
from zdf.client.futures import Future, remote_exception
from zdf.client.options import DEFAULT as DEFAULT_OPTIONS
from zdf.client.options import ClientView, TaskOptions
from zdf.client.transport import Transport, find_leader, master_endpoints
from zdf.errors import LimitExceeded, ProtocolError, ZdfError
from zdf.observe.fnout import OutputPrinter
from zdf.wire.payload import pack, unpack

log = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 20_000
MAP_CHUNK_FN = "zdf.client.chunks:run_chunk"
MAP_AHEAD = 2048  # items of a map submitted ahead of its results (bounded memory)


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

    ``log_to_driver`` (as Ray's): what a task prints or logs is printed here too,
    each line prefixed with its function, pid and worker (``zdf.observe.fnout``:
    bounded in size and rate); not with ``direct_results=False``.
    """

    def __init__(
        self,
        master_addr: str | list[str],
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_retries: int = 3,
        timeout: float = 10.0,
        direct_results: bool = True,
        log_to_driver: bool = True,
    ) -> None:
        endpoints = master_endpoints(master_addr)
        self.endpoints = endpoints
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
            on_output=OutputPrinter() if log_to_driver else None,
        )
        self.allow_pickle = bool(self._io.hello.get("allow_pickle"))
        self._owned_cluster: Any = None  # the LocalCluster connect() started for it

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
    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; returns a future at once. Every
        keyword goes to ``fn``; zdf's own settings are set with ``options``."""
        return self._submit(fn, args, kwargs, DEFAULT_OPTIONS)

    def options(self, **options: Any) -> ClientView:
        """A view of this client whose ``submit`` and ``map`` run tasks with these
        options (``zdf.client.options``): ``retries`` after a worker dies, the
        ``resources`` a task needs (``{"cpu": 2, "gpu": 1}``; default one cpu),
        ``priority`` (higher first) and a ``name``."""
        return ClientView(self, DEFAULT_OPTIONS).options(**options)

    def _submit(
        self,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> Future:
        if self._io.closed:
            raise ZdfError("client is closed")
        path, frames, inputs = self._encode_call(fn, args, kwargs)
        size = sum(map(len, frames))
        if size > self._io.max_value_bytes:  # refused at once, never left to time out
            raise LimitExceeded(
                f"the arguments of {path} take {size} bytes, over the cluster's limit of "
                f"{self._io.max_value_bytes} bytes (max-value-bytes)"
            )
        retries = self.max_retries if options.retries is None else options.retries
        wire = options.wire
        if inputs:
            wire = {**wire, "deps": [graph.dep_entry(f) for f in inputs]}
        if not self._slots.acquire(timeout=self.timeout * 6):
            raise ZdfError("submission backpressure: no task finished for too long")
        tid = next(self._tids)
        future = Future(self, tid)
        self._futures[tid] = future  # before sending: the answer may come at once
        task = (tid, path, retries, frames, wire)
        future.lease = self._io.send(task, nothing_in_flight=len(self._futures) == 1)
        return future

    def _encode_call(
        self, fn: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, list[Any], list[Future]]:
        """The function's path, the arguments' frames, and the futures among them."""
        refer, inputs = graph.inputs_hook(self)
        try:
            frames = pack([args, kwargs], refer)
        except TypeError as exc:
            raise TypeError(f"{exc} (an argument of {_name(fn)})") from None
        try:
            return function_path(fn), frames, inputs
        except ValueError as exc:
            if isinstance(fn, str) or not callable(fn):
                raise
            if not self.allow_pickle:
                raise ValueError(
                    f"{exc}; the cluster does not accept pickled functions "
                    "(allow-pickle is false on its master)"
                ) from None
        return P.PICKLED_FN, [self._pickled(fn), *frames], inputs

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
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn(*args)`` for ``args`` in ``zip(*iterables)``, as
        ``concurrent.futures.Executor.map``: results in order, ``TimeoutError`` if
        they are not all there ``timeout`` seconds after the call. The iterables
        are consumed lazily, a bounded number of tasks ahead of the results (so an
        endless iterable is fine). ``chunksize`` items per task saves round trips
        for functions of a few microseconds; each chunk runs on one worker, so
        keep it 1 (the default) for functions that take milliseconds or more.
        """
        return self._map(fn, iterables, timeout, chunksize, DEFAULT_OPTIONS)

    def _map(
        self,
        fn: Callable[..., Any] | str,
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        options: TaskOptions,
    ) -> Iterator[Any]:
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        view = ClientView(self, options)
        items = zip(*iterables, strict=False)  # the shortest ends it, as zip and Executor.map
        if chunksize == 1:
            path_or_fn = fn if isinstance(fn, str) else self._resolvable(fn)

            def submit_next() -> Future | None:
                args = next(items, None)
                return None if args is None else view.submit(path_or_fn, *args)

        else:
            try:
                chunk_fn: Callable[..., Any] | str = MAP_CHUNK_FN
                chunk_args: tuple[Any, ...] = (function_path(fn),)
                label = f"{chunk_args[0]}*{chunksize}"
            except ValueError:
                if isinstance(fn, str) or not self.allow_pickle:
                    raise
                chunk_fn, chunk_args, label = PickledChunk(fn), (), ""
            if not options.name and label:
                # Durations are learnt per mapped function, not for every map as one.
                view = ClientView(self, options.merged(name=label))

            def submit_next() -> Future | None:
                chunk = [list(args) for args in itertools.islice(items, chunksize)]
                return view.submit(chunk_fn, *chunk_args, chunk) if chunk else None

        window: deque[Future] = deque()
        ahead = max(4, MAP_AHEAD // chunksize)

        def refill() -> None:
            while len(window) < ahead:
                future = submit_next()
                if future is None:
                    return
                window.append(future)

        refill()  # the work starts now, as with concurrent.futures
        return self._map_results(window, refill, deadline, chunksize > 1)

    def _map_results(
        self,
        window: deque[Future],
        refill: Callable[[], None],
        deadline: float | None,
        chunked: bool,
    ) -> Iterator[Any]:
        while window:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                value = window[0].result(left)
            except concurrent.futures.TimeoutError:
                raise TimeoutError("map: results not all there within the timeout") from None
            window.popleft()
            refill()
            if chunked:
                yield from value
            else:
                yield value

    def _resolvable(self, fn: Callable[..., Any]) -> Callable[..., Any] | str:
        """``fn`` by path where it has one (checked once per map, not per item)."""
        try:
            return function_path(fn)
        except ValueError:
            if not self.allow_pickle:
                raise
            return fn

    # -- task graphs (zdf.client.graph) ---------------------------------------
    def gather(self, futures: Any, timeout: float | None = None) -> Any:
        """The results of ``futures``, in the same structure (a future, or lists, tuples,
        sets and dicts of them, however nested); raises the first failed one's error."""
        return graph.gather(futures, timeout)

    def scatter(self, data: Any, broadcast: bool = False) -> Any:
        """Put values on the workers for tasks to take: a list or tuple gives a list of
        futures, a dict a dict of them, anything else one future. With ``broadcast``
        every worker keeps a copy (inputs then never travel). The futures are done at
        once; pass them to tasks as arguments."""
        if isinstance(data, dict):
            keys = list(data)
            return dict(zip(keys, self._scatter([data[k] for k in keys], broadcast), strict=True))
        if isinstance(data, list | tuple):
            return self._scatter(list(data), broadcast)
        return self._scatter([data], broadcast)[0]

    def _scatter(self, values: list[Any], broadcast: bool) -> list[Future]:
        if self._io.closed:
            raise ZdfError("client is closed")
        packed = []
        for value in values:
            try:
                packed.append(pack(value))
            except TypeError as exc:
                raise TypeError(f"cannot scatter it: {exc}") from None
        tids = [next(self._tids) for _ in values]
        sizes = [sum(len(f) for f in frames) for frames in packed]
        for size in sizes:
            if size > self._io.max_value_bytes:  # refused at once, as submit does
                raise LimitExceeded(
                    f"cannot scatter a value of {size} bytes: over the cluster's limit of "
                    f"{self._io.max_value_bytes} bytes (max-value-bytes)"
                )
        body = {"tids": tids, "nbytes": sizes, "broadcast": bool(broadcast)}
        plan = graph.scatter_plan(self._io.request(P.FN_SCATTER, body))
        by_tid = dict(zip(tids, packed, strict=True))
        futures = []
        for tid, value in zip(tids, values, strict=True):
            future = Future(self, tid)
            future.set_result(value)
            future._shared = True
            futures.append(future)
        for addr, entries in plan:
            self._io.put(addr, [(key, by_tid[tid]) for tid, key in entries])
        return futures

    # -- jobs (zdf.client.jobs) ----------------------------------------------
    def submit_job(self, job: Any) -> str:
        """Submit a job: a ``zdf.dataflow.Flow``, a ``JobSpec`` or a job file's table; its id."""
        return jobs.submit_job(self.endpoints, job, self.timeout)

    def job_status(self, job_id: str) -> dict[str, Any]:
        return jobs.job_status(self.endpoints, job_id, self.timeout)

    def wait_job(self, job_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """Wait for the job to end; its final status (``Timeout`` after ``timeout`` s)."""
        return jobs.wait_job(self.endpoints, job_id, timeout, self.timeout)

    def close(self) -> None:
        """Close the connection (and stop the cluster ``connect()`` started for it)."""
        if not self._io.closed:
            self._io.close()
            for future in list(self._futures.values()):
                if not future.done():
                    future.set_exception(ZdfError("client closed before the task finished"))
            self._futures.clear()
        cluster, self._owned_cluster = self._owned_cluster, None
        if cluster is not None:
            cluster.stop()

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

    def _cancel(self, tid: int) -> bool:
        """Withdraw ``tid`` if it has not started (True: it never runs)."""
        if tid not in self._futures:
            return False
        if not self._io.cancel(tid):
            return False
        self._take(tid)
        return True

    def _wait(self, future: Future, timeout: float | None) -> None:
        self._io.wait_here(future.done, timeout)

    def _attend(self, future: Future) -> None:
        self._io.attend(future.tid)

    def _release(self, future: Future) -> None:
        if not self._io.closed and future._state != "CANCELLED":  # type: ignore[attr-defined]
            self._io.release(future.tid, future.lease, future._shared)

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


def _name(fn: Any) -> str:
    return fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))


def connect(
    master_addr: str | list[str] | None = None,
    *,
    security_dir: str | None = None,
    meta_endpoints: str | list[str] | None = None,
    **options: Any,
) -> Client:
    """A client of the master at ``host:port`` (or the leader of a comma-separated list);
    given ``meta_endpoints`` instead, of the masters the metastore's discovery records name.

    With neither, a whole cluster is started on this machine for this client
    (``zdf.LocalCluster()``, secured with keys of its own, as ``ray.init()`` or
    Dask's ``Client()`` do), and stopped when the client closes.

    ``security_dir`` (default: ``ZDF_SECURITY_DIR``) holds the cluster's CURVE keys;
    this process then speaks as the ``client`` role on every socket it makes."""
    if master_addr is None and not meta_endpoints:
        from zdf.localcluster import LocalCluster

        cluster = LocalCluster().start()
        try:
            client = Client(cluster.master_addr, **options)
        except BaseException:
            cluster.stop()
            raise
        client._owned_cluster = cluster
        return client
    from zdf.wire import security

    security_dir = os.environ.get("ZDF_SECURITY_DIR", "") if security_dir is None else security_dir
    if security_dir:
        security.configure(security_dir, "client")
    if master_addr is None:
        from zdf.config import parse_addr_list
        from zdf.discovery import find_masters

        master_addr = find_masters(parse_addr_list(meta_endpoints))
    return Client(master_addr, **options)
