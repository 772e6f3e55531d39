"""Example operators and functions for dataflow jobs: the README's word count, the tests.

* ``Events`` (source): rows ``key``, ``ts``, ``value`` (int64): event ``i`` of
  ``[0, stop)`` (split in contiguous ranges among the instances) has key
  ``i % keys``, value ``i % 10``, and event time ``i * spacing`` minus a
  deterministic jitter of up to ``disorder``: out of order by at most ``disorder``.
* ``to_words`` (a map): each ``Sequence`` row becomes a word of ``WORDS`` chosen by
  ``value % len(WORDS)``, with a count of 1 (rows ``word`` S8, ``count`` int64).
* ``is_even`` (a filter): rows whose ``value`` is even.

All of them are pure functions of their input, as exactly-once needs
(``zdf.dataflow.operator``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zdf.dataflow.operator import Source

WORDS = np.array(
    [
        *(b"zero", b"mq", b"data", b"flow", b"exactly", b"once", b"key", b"sum"),
        *(b"hash", b"step", b"sink", b"batch", b"replay", b"window", b"credit", b"pipe"),
    ],
    dtype="S8",
)
WORD_DTYPE = np.dtype([("word", "S8"), ("count", "<i8")])
EVENT_DTYPE = np.dtype([("key", "<i8"), ("ts", "<i8"), ("value", "<i8")])


def to_words(rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), WORD_DTYPE)
    out["word"] = WORDS[rows["value"] % len(WORDS)]
    out["count"] = 1
    return out


def word_counts(start: int, stop: int) -> dict[bytes, int]:
    """The closed form of the word count over ``Sequence(start, stop)``."""
    n = len(WORDS)
    return {bytes(WORDS[w]): len(range(start + (w - start) % n, stop, n)) for w in range(n)}


def is_even(rows: np.ndarray) -> np.ndarray:
    mask: np.ndarray = rows["value"] % 2 == 0
    return mask


def events(lo: int, hi: int, keys: int, spacing: int, disorder: int) -> np.ndarray:
    """Events ``lo .. hi - 1`` (see the module docstring)."""
    i = np.arange(lo, hi, dtype=np.int64)
    rows = np.empty(len(i), EVENT_DTYPE)
    rows["key"] = i % keys
    rows["value"] = i % 10
    jitter = (i * 2654435761) % (disorder + 1) if disorder else 0
    rows["ts"] = i * spacing - jitter
    return rows


class Events(Source):
    """params: ``stop``, ``keys`` (4), ``spacing`` (10), ``disorder`` (0), ``batch`` (4096)."""

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        if inputs:
            raise ValueError("a source takes no inputs")
        if not isinstance(params.get("stop"), int):
            raise ValueError("param 'stop' must be an integer")
        return EVENT_DTYPE

    def steps(self) -> int:
        p = self.user
        n = int(p["stop"])
        self.lo = n * self.instance // self.parallelism
        self.hi = n * (self.instance + 1) // self.parallelism
        self.batch_rows = int(p.get("batch", 4096))
        return -(-(self.hi - self.lo) // self.batch_rows)

    def batch(self, step: int) -> np.ndarray:
        p = self.user
        lo = self.lo + step * self.batch_rows
        hi = min(lo + self.batch_rows, self.hi)
        return events(
            lo, hi, int(p.get("keys", 4)), int(p.get("spacing", 10)), int(p.get("disorder", 0))
        )
