"""Task graphs on the client: futures as arguments, gather, scatter and wait.

Theory of operation. ``Client.submit`` packs a task's arguments with a hook
(``inputs_hook``) that msgpack calls only for objects it cannot encode, so
arguments without a future cost nothing more. Each ``Future`` found, at any
depth of lists, tuples and dicts, becomes a reference (``REF_EXT``) to its
index among the task's inputs, and the inputs travel in the task's ``deps``
option: the master (``zdf.master.fndeps``) holds the task until they are
ready and the worker puts their values in place of the references. A future
of a task that ran under a lease is named with its lease and worker
(``[tid, lease, worker]``), since the master never saw that task.

``scatter`` asks the master where to put each value (``fn_scatter``), sends
each value straight to its worker's direct port (``fn_put``), and returns
futures that are done at once (their result is the value given); tasks that
take them wait for the worker to confirm it keeps the value. ``gather`` and
``wait`` only wait: every result already comes back to the client as soon as
it is made (and stays on its worker too, for the tasks that take it).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import msgpack

from zdf.client.futures import Future
from zdf.errors import ZdfError
from zdf.wire.payload import REF_EXT

FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED


def inputs_hook(client: Any) -> tuple[Callable[[Any], Any], list[Future]]:
    """A ``pack`` hook turning ``client``'s futures into references, and the list it
    fills with them in order (one entry per distinct future)."""
    found: list[Future] = []
    index: dict[int, int] = {}

    def refer(obj: Any) -> Any:
        if not isinstance(obj, Future):
            return None
        if obj._client is not client:
            raise ValueError(f"{obj!r} belongs to another client: pass it to that client's tasks")
        if obj.cancelled():
            raise ValueError(f"{obj!r} was canceled: it has no value to pass")
        if obj._released:
            raise ValueError(f"{obj!r} was released: its value is gone from the cluster")
        at = index.get(obj.tid)
        if at is None:
            at = index[obj.tid] = len(found)
            found.append(obj)
        return msgpack.ExtType(REF_EXT, msgpack.packb(at))

    return refer, found


def dep_entry(future: Future) -> Any:
    """How the master knows an input: its task id, or ``[tid, lease, worker]``."""
    future._shared = True  # released through the master from now on
    if future.lease:
        return [future.tid, *future.lease]
    return future.tid


def gather(value: Any, timeout: float | None) -> Any:
    """``value`` with every future in it (in lists, tuples, sets and dicts, however
    deep) replaced by its result; the first failed future's error is raised."""
    if isinstance(value, Future):
        return value.result(timeout)
    if isinstance(value, list):
        return [gather(v, timeout) for v in value]
    if isinstance(value, tuple):
        return tuple(gather(v, timeout) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(gather(v, timeout) for v in value)
    if isinstance(value, dict):
        return {k: gather(v, timeout) for k, v in value.items()}
    return value


def wait(
    futures: Any, timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> concurrent.futures._base.DoneAndNotDoneFutures[Any]:
    """``concurrent.futures.wait`` for zdf futures: ``(done, not_done)`` sets, once
    ``return_when`` (``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``)
    holds or ``timeout`` seconds have passed."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError("return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED")
    futures = list(futures)
    for future in futures:
        client = getattr(future, "_client", None)
        if client is not None and not future.done():
            client._attend(future)  # results read by the I/O thread, not a caller
    return concurrent.futures.wait(futures, timeout=timeout, return_when=return_when)


def scatter_plan(answer: Any) -> list[tuple[str, list[tuple[int, str]]]]:
    """The master's ``fn_scatter`` answer as ``[(direct port, [(tid, key), ...]), ...]``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("puts"), list):
        raise ZdfError("the master's answer to fn_scatter is malformed")
    plan = []
    for entry in answer["puts"]:
        addr, keys = entry
        plan.append((str(addr), [(int(tid), str(key)) for tid, key in keys]))
    return plan
