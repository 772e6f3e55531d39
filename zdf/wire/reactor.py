"""A single-threaded event loop over ``zmq.Poller``.

Theory of operation: every zdf process is one reactor. Sockets (and raw file
descriptors) are registered with a callback that is called while they are
readable; timers are kept in a heap and the poll timeout is the time to the
next one. Callbacks must not block. An exception in a callback is logged and
counted; it never stops the loop, unless the process named its type fatal
(``fatal_errors``: the metastore's storage failing), which ends ``run``. This
is faster than asyncio for the small messages zdf lives on, and simpler to
reason about: no locks, no awaits.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class Timer:
    """A handle on a scheduled call; ``cancel()`` is idempotent."""

    __slots__ = ("callback", "cancelled", "due", "interval")

    def __init__(self, due: float, interval: float | None, callback: Callback) -> None:
        self.due = due
        self.interval = interval
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    def __init__(self) -> None:
        self._poller = zmq.Poller()
        self._readers: dict[Any, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self.callback_errors = 0
        self.fatal_errors: tuple[type[BaseException], ...] = ()
        """Errors a callback may not survive (e.g. a full disk): they end ``run``."""
        # A self-pipe so that stop() from a signal handler or another thread wakes the poll.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.add_reader(self._wake_r.fileno(), self._drain_wakeups)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # -- registration -------------------------------------------------------
    def add_reader(self, sock_or_fd: Any, callback: Callback) -> None:
        self._readers[sock_or_fd] = callback
        self._poller.register(sock_or_fd, zmq.POLLIN)

    def remove_reader(self, sock_or_fd: Any) -> None:
        if self._readers.pop(sock_or_fd, None) is not None:
            self._poller.unregister(sock_or_fd)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + delay, None, callback)
        heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
        return timer

    def call_every(self, interval: float, callback: Callback, *, now: bool = False) -> Timer:
        timer = Timer(time.monotonic() + (0.0 if now else interval), interval, callback)
        heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
        return timer

    def stop_on_signals(self, *signums: int) -> None:
        """Stop the loop on these signals (the handler's stop() wakes the poll at once)."""
        for signum in signums:
            signal.signal(signum, lambda *_: self.stop())

    # -- running -----------------------------------------------------------
    def stop(self) -> None:
        """Stop the loop; safe from a signal handler or another thread."""
        self._running = False
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        self.remove_reader(self._wake_r.fileno())
        self._wake_r.close()
        self._wake_w.close()

    @property
    def running(self) -> bool:
        return self._running

    def run(self, until: Callable[[], bool] | None = None, deadline: float | None = None) -> None:
        """Run until ``stop()``, until ``until()`` is true, or until the monotonic ``deadline``."""
        self._running = True
        try:
            while self._running:
                if until is not None and until():
                    return
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return
                self._run_due_timers(now)
                if not self._running or (until is not None and until()):
                    return
                timeout_ms = self._poll_timeout_ms(deadline)
                for sock, _ in self._poller.poll(timeout_ms):
                    callback = self._readers.get(sock)
                    if callback is not None:
                        self._guard(callback)
        finally:
            self._running = False

    def run_once(self, timeout: float = 0.0) -> None:
        """Poll once (for tests and for embedding in a blocking caller)."""
        self._run_due_timers(time.monotonic())
        for sock, _ in self._poller.poll(int(timeout * 1000)):
            callback = self._readers.get(sock)
            if callback is not None:
                self._guard(callback)

    def _poll_timeout_ms(self, deadline: float | None) -> int:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        wake = self._timers[0][0] if self._timers else None
        if deadline is not None:
            wake = deadline if wake is None else min(wake, deadline)
        if wake is None:
            return 1000
        delta = wake - time.monotonic()
        # A timer already due (one scheduled by a callback of this turn) must not
        # cost a millisecond of sleep; a future one is rounded up, never down.
        return 0 if delta <= 0 else min(1000, math.ceil(delta * 1000))

    def _run_due_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.due = max(timer.due + timer.interval, now)
                heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
            self._guard(timer.callback)

    def _guard(self, callback: Callback) -> None:
        try:
            callback()
        except self.fatal_errors:
            raise
        except Exception:
            self.callback_errors += 1
            log.exception("reactor callback failed")
