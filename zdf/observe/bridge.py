"""Run a function on a reactor's thread from another thread, with a deadline.

Theory of operation: the bridge registers one end of a socket pair as a reader
of the reactor. ``call`` puts the function on a queue, writes a byte to the
other end (which wakes the poll) and waits on an event for at most ``timeout``
seconds. On the loop, the reader drains the pair and runs every queued function,
so the function sees the process's state between two callbacks, never in the
middle of one: no locks are needed in the process's own code. A loop that does
not answer in time (stalled, or not running yet) makes ``call`` raise
``Timeout``; the late answer is dropped.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from zdf.errors import Timeout
from zdf.wire.reactor import Reactor


class _Request:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class LoopBridge:
    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        reactor.add_reader(self._r.fileno(), self._drain)
        self.closed = False

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()`` run on the reactor's thread; ``Timeout`` if it has not run in time."""
        if self.closed:
            raise Timeout("the process is shutting down")
        request = _Request(fn)
        self._queue.put(request)
        try:
            self._w.send(b"x")
        except BlockingIOError:
            pass  # the pair is full of wake-ups already: the loop will look
        except OSError:
            raise Timeout("the process is shutting down") from None
        if not request.done.wait(timeout):
            raise Timeout(f"the process's loop did not answer within {timeout:.1f}s")
        if request.error is not None:
            raise request.error
        return request.result

    def _drain(self) -> None:
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                request.result = request.fn()
            except Exception as exc:
                request.error = exc
            request.done.set()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.remove_reader(self._r.fileno())
        self._r.close()
        self._w.close()
