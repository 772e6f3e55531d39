"""How long the benchmark job took to get back to speed after a fault, from its sink files.

The demo, the fault tests and the failover benchmark ask the same question:
"after the kill at time K, when were the sinks writing at 90 % of their normal
rate again?". Every row in a sink file carries ``sink_ts``, the wall-clock time it
was written, so the answer comes exactly from the output itself rather than from
progress reports (which the workers rate-limit to one per 0.25 s per task):

* normal rate: data rows written in the ``baseline`` seconds before K, per second;
* recovered: the end of the first window of ``window`` seconds, wholly after K,
  in which the sinks wrote at least ``fraction`` of that rate.

So the figure cannot be below ``window`` (100 ms by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from zdf.records import DATA, SINK_DTYPE

DEFAULT_WINDOW = 0.1
DEFAULT_BASELINE = 1.0
DEFAULT_FRACTION = 0.9


@dataclass(frozen=True)
class Recovery:
    normal_rate: float  # records/s before the fault
    recovered_s: float | None  # seconds from the fault (or since_ns) to the rate back
    stalled_s: float  # the longest gap between two writes after the fault


def sink_times(out_dir: str, streams: int) -> np.ndarray:
    """Every data row's ``sink_ts`` (ns) across the sink files, sorted."""
    parts = []
    for s in range(streams):
        path = os.path.join(out_dir, f"sink_{s}.bin")
        if os.path.exists(path):
            rows = np.fromfile(path, SINK_DTYPE)
            parts.append(rows["sink_ts"][rows["tp"] == DATA])
    times = np.concatenate(parts) if parts else np.empty(0, np.int64)
    times.sort()
    return times


def measure_recovery(
    times_ns: np.ndarray,
    fault_ns: int,
    *,
    window: float = DEFAULT_WINDOW,
    baseline: float = DEFAULT_BASELINE,
    fraction: float = DEFAULT_FRACTION,
    since_ns: int | None = None,
) -> Recovery:
    """``since_ns``: look for the recovered window only from then on (a partition is
    noticed a keepalive TTL after the cut, while the pipes still drain: counted from
    the dead declaration), still against the rate before ``fault_ns``."""
    before = np.searchsorted(times_ns, [fault_ns - int(baseline * 1e9), fault_ns])
    normal = float(before[1] - before[0]) / baseline
    after = times_ns[before[1] :]
    gaps = np.diff(np.concatenate([[fault_ns], after])) if len(after) else np.empty(0)
    stalled = float(gaps.max()) / 1e9 if len(gaps) else 0.0
    if normal <= 0 or not len(after):
        return Recovery(normal, None, stalled)
    step = int(window * 1e9)
    start = fault_ns if since_ns is None else max(fault_ns, since_ns)
    ends = np.arange(start + step, int(after[-1]) + step + 1, step // 4 or 1)
    counts = np.searchsorted(after, ends) - np.searchsorted(after, ends - step)
    ok = np.flatnonzero(counts >= fraction * normal * window)
    recovered = float(ends[ok[0]] - start) / 1e9 if len(ok) else None
    return Recovery(normal, recovered, stalled)
