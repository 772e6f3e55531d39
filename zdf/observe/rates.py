"""Steady rates from counters sampled at irregular times.

A rate measured between two close samples flickers: with a producer that
reports every half second, one poll sees no change (rate 0) and the next twice
the change (twice the rate). ``RateMeter`` keeps the samples of the last
``window`` seconds and gives the change over the whole window, so each answer
covers several reports; ``records_done`` is what a job has done, counted where
its records end (its sinks), else over all its tasks.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

RATE_WINDOW = 3.0
"""Seconds of samples a rate is measured over: several progress reports of every task."""


def records_done(tasks: Iterable[Mapping[str, Any]]) -> float:
    """Records done so far, summed over the sinks' (or all tasks') progress counters."""
    tasks = list(tasks)
    sinks = [t for t in tasks if t.get("kind") == "sink"] or tasks
    return float(sum(float((t.get("progress") or {}).get("records", 0)) for t in sinks))


class RateMeter:
    """Per-second rate of one counter over the last ``window`` seconds of samples."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> float:
        samples = self._samples
        if samples and value < samples[-1][1]:
            samples.clear()  # the counter was reset (a restarted task): start again
        samples.append((now, value))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        return self.rate()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


class RateBoard:
    """Rates of many named counters (one meter each), shared by threads."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._meters: dict[str, RateMeter] = {}
        self._lock = threading.Lock()

    def update(self, now: float, values: Mapping[str, float]) -> dict[str, float]:
        """Add a sample of every counter; forget the counters no longer given."""
        with self._lock:
            for name in [n for n in self._meters if n not in values]:
                del self._meters[name]
            out = {}
            for name, value in values.items():
                meter = self._meters.setdefault(name, RateMeter(self.window))
                out[name] = meter.add(now, value)
            return out
