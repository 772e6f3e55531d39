"""Futures of function tasks, and the remote exceptions they raise."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from zdf.errors import RemoteError

if TYPE_CHECKING:
    from zdf.client.client import Client


class Future(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` that can also be awaited and canceled remotely.

    ``result(timeout)``, ``exception(timeout)``, ``done()`` and
    ``add_done_callback`` behave as in the standard library. ``cancel()`` as
    well: it returns True only if the task had not started, and then it never
    runs; once it runs (or has run), False, and the future gets its result as
    usual. To know, it may ask the master and the worker holding the task (a
    round trip, within the client's ``timeout``); a task sent straight to a
    leased worker is running and is not withdrawn. ``await future`` works in
    any event loop.

    A future passed as an argument of another task is an input of that task
    (``zdf.client.graph``); its value stays on the worker that made it until the
    future is released (``release()``, or garbage-collected) and no pending task
    takes it.
    """

    def __init__(self, client: Client, tid: int) -> None:
        super().__init__()
        self._client = client
        self.tid = tid
        self.lease: tuple[str, str] | None = None  # (lease, worker) if run under a lease
        self._released = False
        self._shared = False  # an input of another task: released through the master

    def release(self) -> None:
        """Tell the cluster this future's value is no longer needed (garbage collection
        does the same). A result already here stays readable; the future can no longer
        be passed to a task."""
        if not self._released:
            self._released = True
            self._client._release(self)

    def __del__(self) -> None:
        if not self._released:
            self._released = True
            try:
                self._client._release(self)
            except Exception:  # the client is being torn down
                pass

    def cancel(self) -> bool:
        if self.cancelled():
            return True
        if self.done() or not self._client._cancel(self.tid):
            return False
        canceled = super().cancel()
        if canceled:
            super().set_running_or_notify_cancel()
        return canceled

    def result(self, timeout: float | None = None) -> Any:
        return super().result(self._wait_here(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._wait_here(timeout))

    def _wait_here(self, timeout: float | None) -> float | None:
        """Wait here, reading results, for up to ``timeout``; what is left of it."""
        if self.done():
            return timeout
        started = time.monotonic()
        self._client._wait(self, timeout)
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[Any]], object]) -> None:
        if not self.done():
            self._client._attend(self)
        super().add_done_callback(fn)

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        return f"<zdf.Future tid={self.tid} {self._state.lower()}>"  # type: ignore[attr-defined]


def remote_exception(info: Any) -> BaseException:
    """Rebuild a remote exception: the same built-in type where there is one, with the
    remote traceback as a note; otherwise a ``RemoteError`` naming the remote type."""
    if not isinstance(info, dict):
        return RemoteError(repr(info), remote_type="Exception")
    name = str(info.get("type", "Exception"))
    module = str(info.get("module", ""))
    message = str(info.get("message", ""))
    tb = str(info.get("traceback", ""))
    exc: BaseException
    cls = getattr(builtins, name, None) if module == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:
            exc = RemoteError(message, remote_type=name)
    else:
        qualified = f"{module}.{name}" if module and module != "builtins" else name
        exc = RemoteError(message, remote_type=qualified)
    exc.remote_traceback = tb  # type: ignore[attr-defined]
    if tb:
        exc.add_note("remote traceback:\n" + tb.rstrip())
    return exc


def as_completed(
    futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None
) -> Iterator[concurrent.futures.Future[Any]]:
    """Yield futures as they complete (``concurrent.futures.as_completed``)."""
    futures = list(futures)
    for future in futures:
        if isinstance(future, Future) and not future.done():
            future._client._attend(future)
    return concurrent.futures.as_completed(futures, timeout=timeout)
