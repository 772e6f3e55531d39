"""A mergeable latency histogram: geometric bins of 1 % from 1 µs to 1000 s.

Sinks add whole batches (``np.searchsorted`` + ``np.bincount``) and send their
counts to the coordinator, which adds them up; percentiles of the merged
histogram are then exact to within one bin (1 %), with no samples kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EDGES_NS = np.geomspace(1e3, 1e12, num=2084)
"""Bin i holds latencies in [EDGES_NS[i-1], EDGES_NS[i]); bin 0 is < 1 µs, the last >= 1000 s."""


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = np.zeros(len(EDGES_NS) + 1, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, latencies_ns: np.ndarray) -> None:
        if len(latencies_ns):
            bins = np.searchsorted(EDGES_NS, latencies_ns, side="right")
            self.counts += np.bincount(bins, minlength=len(self.counts))

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
