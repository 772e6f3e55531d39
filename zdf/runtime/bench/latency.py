"""A mergeable latency histogram: geometric bins of 1 % from 1 µs to 1000 s.

Sinks add whole batches (``np.searchsorted`` + ``np.bincount``) and send their
counts to the coordinator, which adds them up; percentiles of the merged
histogram are then exact to within one bin (1 %), with no samples kept.

``WriteFigures`` is what a sink keeps as it writes. A write is often small (the
rows a DDL barrier released), and binning it alone costs more than the write:
the figures keep each write's ``ts`` column and bin them together every
``FOLD_ROWS`` rows, or when read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FOLD_ROWS = 1 << 16
"""Rows whose latencies may wait to be binned (8 bytes each, plus their writes)."""

EDGES_NS = np.geomspace(1e3, 1e12, num=2084)
"""Bin i holds latencies in [EDGES_NS[i-1], EDGES_NS[i]); bin 0 is < 1 µs, the last >= 1000 s."""


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = np.zeros(len(EDGES_NS) + 1, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, latencies_ns: np.ndarray) -> None:
        n = len(latencies_ns)
        if not n:
            return
        # Rows written together from one producer batch share their latency: bin each
        # run of equal values once (a binary search per row costs more than the rest).
        change = np.empty(n, bool)
        change[0] = True
        np.not_equal(latencies_ns[1:], latencies_ns[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        if len(starts) * 4 > n:
            bins = np.searchsorted(EDGES_NS, latencies_ns, side="right")
            self.counts += np.bincount(bins, minlength=len(self.counts))
            return
        lengths = np.diff(starts, append=n)
        bins = np.searchsorted(EDGES_NS, latencies_ns[starts], side="right")
        np.add.at(self.counts, bins, lengths)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile in ms (the geometric middle of its bin); 0.0 when empty."""
        total = self.total
        if total == 0:
            return 0.0
        rank = max(1, int(np.ceil(q / 100.0 * total)))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        low = EDGES_NS[i - 1] if i > 0 else 0.0
        high = EDGES_NS[min(i, len(EDGES_NS) - 1)]
        middle = float(np.sqrt(low * high)) if low > 0 else float(high)
        return round(middle / 1e6, 4)

    def to_wire(self) -> dict[int, int]:
        """Sparse ``{bin: count}`` for msgpack."""
        nonzero = np.flatnonzero(self.counts)
        return dict(zip(nonzero.tolist(), self.counts[nonzero].tolist(), strict=True))

    @classmethod
    def from_wire(cls, data: Any) -> LatencyHistogram:
        hist = cls()
        if isinstance(data, dict):
            for k, v in data.items():
                if 0 <= int(k) < len(hist.counts):
                    hist.counts[int(k)] += int(v)
        return hist


class WriteFigures:
    """Counts, first/last times, bytes and the latency histogram of a sink's writes."""

    def __init__(self) -> None:
        self.records = 0
        self.ddls = 0
        self.bytes = 0
        self.last_ts = 0
        self._first_ts = 0
        self._hist = LatencyHistogram()
        self._waiting: list[tuple[int, np.ndarray, bool]] = []  # (sink ts, ts column, data)
        self._waiting_rows = 0

    def wrote(self, now_ns: int, rows: np.ndarray, *, data: bool) -> None:
        """``rows`` (with a ``ts`` field) were written at ``now_ns``: data, or DDLs."""
        if data:
            self.records += len(rows)
        else:
            self.ddls += len(rows)
        self.bytes += rows.nbytes
        self.last_ts = now_ns
        self._waiting.append((now_ns, rows["ts"], data))
        self._waiting_rows += len(rows)
        if self._waiting_rows >= FOLD_ROWS:
            self._fold()

    def _fold(self) -> None:
        waiting, self._waiting, self._waiting_rows = self._waiting, [], 0
        if not waiting:
            return
        every = np.concatenate([ts for _, ts, _ in waiting])
        if not len(every):
            return
        first = int(every.min())
        self._first_ts = min(self._first_ts or first, first)
        sizes = [len(ts) for _, ts, _ in waiting]
        nows = np.repeat(np.array([now for now, _, _ in waiting], np.int64), sizes)
        latencies = nows - every
        if all(data for _, _, data in waiting):
            self._hist.add(latencies)
        else:
            keep = np.repeat(np.array([data for _, _, data in waiting]), sizes)
            self._hist.add(latencies[keep])

    @property
    def first_ts(self) -> int:
        self._fold()
        return self._first_ts

    @property
    def hist(self) -> LatencyHistogram:
        self._fold()
        return self._hist

    def as_dict(self) -> dict[str, Any]:
        """The keys of ``sinkfile.file_summary``."""
        return {
            "records": self.records,
            "ddls": self.ddls,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "bytes": self.bytes,
            "hist": self.hist,
        }
