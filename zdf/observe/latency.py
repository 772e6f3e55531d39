"""A latency histogram cheap enough for a hot path: one bisect and two additions.

prometheus-client's ``Histogram.observe`` takes a lock and walks its buckets in
Python; this one is owned by one thread (the reactor's) and read at scrape time
as a snapshot (``buckets()``), which ``zdf.observe.families`` turns into a
Prometheus histogram.
"""

from __future__ import annotations

from bisect import bisect_left

WRITE_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
"""Seconds: from a fast group commit on a local disk to a write that waited for an election."""


class LatencyHistogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = WRITE_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(upper bound, count)`` pairs ending with ``+Inf`` (as Prometheus has)."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out
