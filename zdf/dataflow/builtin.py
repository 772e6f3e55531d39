"""Built-in dataflow operators (DESIGN.md, "Dataflow jobs of your own").

* ``Sequence`` (source): rows ``key``, ``value`` (int64); ``value`` runs over
  ``[start, stop)`` split in contiguous ranges among its instances, ``key =
  value % keys``; ``batch`` rows a step.
* ``KeyedSum``: per ``key``, the sum of ``field`` and a count; one row per key
  (``key``, ``sum``, ``count``), sorted by key, at the end of the stream.
* ``TumblingWindow``: per ``key`` and event-time window ``[w, w + size)`` of the
  integer field ``time``: the sum of ``field`` and a count, emitted as soon as
  the watermark passes the window's end (rows ``key``, ``window_start``, ``sum``,
  ``count``). The watermark is the smallest, over the input channels still
  open, of the largest event time seen on the channel minus ``lateness``; a row
  that arrives for a window already emitted is late: dropped and counted.
* ``Map`` / ``Filter``: call a function by import path on each batch: ``Map``'s
  returns the new rows (of the param ``dtype``, default the input's), ``Filter``'s
  a boolean mask.
* ``FileSink``: writes ``<dir>/<flow-id>/<task name>-<instance>.npy`` exactly once
  (``zdf.dataflow.npyfile``).

Sums are exact: integer fields are summed in int64 (``np.add.at``), never
through floats.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from zdf.dataflow.dtypes import dtype_from_wire, require_fields
from zdf.dataflow.npyfile import StepFile, safe_dir
from zdf.dataflow.operator import FlowOperator, Source, Transform, input_dtype

DENSE_KEYS = 1 << 22
"""Integer keys in [0, DENSE_KEYS) are summed into arrays indexed by key; others into a dict."""

DEFAULT_BATCH = 65536
LOCK_RETRY = 0.02


def _int_param(
    params: dict[str, Any], name: str, default: int | None = None, low: int | None = None
) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"param {name!r} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"param {name!r} must be at least {low}, got {value}")
    return value


def _sum_dtype(dtype: np.dtype[Any], field: str) -> np.dtype[Any]:
    kind = dtype[field].kind
    if kind in "iub":
        return np.dtype("<i8")
    if kind == "f":
        return np.dtype("<f8")
    raise ValueError(f"field {field!r} is {dtype[field]}, not a number")


def load_function(path: Any) -> Callable[..., Any]:
    """``module:function`` imported; ``ValueError`` in one line when it is not there."""
    if not isinstance(path, str) or ":" not in path:
        raise ValueError(f"param 'fn' must be an import path module:function, got {path!r}")
    module, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import {module}: {exc}") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ValueError(f"{path} is not a function")
    return obj  # type: ignore[no-any-return]


class Sequence(Source):
    """params: ``stop`` (required), ``start`` (0), ``keys`` (1), ``batch`` (65536)."""

    DTYPE = np.dtype([("key", "<i8"), ("value", "<i8")])

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        if inputs:
            raise ValueError("a source takes no inputs")
        start = _int_param(params, "start", 0)
        stop = _int_param(params, "stop")
        if stop < start:
            raise ValueError(f"param 'stop' ({stop}) is below 'start' ({start})")
        _int_param(params, "keys", 1, low=1)
        _int_param(params, "batch", DEFAULT_BATCH, low=1)
        return cls.DTYPE

    def steps(self) -> int:
        p = self.user
        start, stop = int(p.get("start", 0)), int(p["stop"])
        n = stop - start
        self.lo = start + n * self.instance // self.parallelism
        self.hi = start + n * (self.instance + 1) // self.parallelism
        self.keys = int(p.get("keys", 1))
        self.batch_rows = int(p.get("batch", DEFAULT_BATCH))
        return -(-(self.hi - self.lo) // self.batch_rows)

    def batch(self, step: int) -> np.ndarray:
        lo = self.lo + step * self.batch_rows
        values = np.arange(lo, min(lo + self.batch_rows, self.hi), dtype=np.int64)
        rows = np.empty(len(values), self.DTYPE)
        rows["value"] = values
        rows["key"] = values % self.keys
        return rows


class _Sums:
    """Exact per-key sums and counts: dense arrays for small non-negative int keys, else a dict."""

    def __init__(self, key_dtype: np.dtype[Any], sum_dtype: np.dtype[Any]) -> None:
        self.key_dtype = key_dtype
        self.sum_dtype = sum_dtype
        self.sums = np.zeros(0, sum_dtype)
        self.counts = np.zeros(0, np.int64)
        self.other: dict[Any, list[Any]] = {}

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not len(keys):
            return
        if keys.dtype.kind in "iu":
            low, high = int(keys.min()), int(keys.max())
            if low >= 0 and high < DENSE_KEYS:
                if high >= len(self.sums):
                    size = max(high + 1, 2 * len(self.sums))
                    self.sums = np.concatenate(
                        [self.sums, np.zeros(size - len(self.sums), self.sum_dtype)]
                    )
                    self.counts = np.concatenate(
                        [self.counts, np.zeros(size - len(self.counts), np.int64)]
                    )
                index = keys.astype(np.intp, copy=False)
                np.add.at(self.sums, index, values.astype(self.sum_dtype, copy=False))
                self.counts[: high + 1] += np.bincount(index, minlength=high + 1)
                return
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.zeros(len(uniq), self.sum_dtype)
        np.add.at(sums, inverse, values.astype(self.sum_dtype, copy=False))
        counts = np.bincount(inverse, minlength=len(uniq))
        other = self.other
        for k, s, c in zip(uniq.tolist(), sums.tolist(), counts.tolist(), strict=True):
            acc = other.get(k)
            if acc is None:
                other[k] = [s, c]
            else:
                acc[0] += s
                acc[1] += c

    def rows(self, dtype: np.dtype[Any]) -> np.ndarray:
        dense = np.flatnonzero(self.counts)
        if not self.other:
            out = np.empty(len(dense), dtype)
            out["key"] = dense
            out["sum"] = self.sums[dense]
            out["count"] = self.counts[dense]
            return out
        merged = dict(self.other)
        for k, s, c in zip(
            dense.tolist(), self.sums[dense].tolist(), self.counts[dense].tolist(), strict=True
        ):
            acc = merged.setdefault(k, [0, 0])
            acc[0] += s
            acc[1] += c
        keys = sorted(merged)
        out = np.empty(len(keys), dtype)
        out["key"] = keys
        out["sum"] = [merged[k][0] for k in keys]
        out["count"] = [merged[k][1] for k in keys]
        return out


class KeyedSum(Transform):
    """params: ``key`` (default: the hash input's key, else "key"), ``field`` ("value")."""

    keyed = True

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        dtype = input_dtype(inputs)
        key, field = str(params.get("key", "key")), str(params.get("field", "value"))
        require_fields(dtype, key, field)
        return np.dtype([("key", dtype[key]), ("sum", _sum_dtype(dtype, field)), ("count", "<i8")])

    def setup(self) -> None:
        assert self.dtype is not None
        self.key = str(self.user.get("key", "key"))
        self.field = str(self.user.get("field", "value"))
        self.acc = _Sums(self.dtype["key"], self.dtype["sum"])

    def process(self, rows: np.ndarray, port: int) -> None:
        self.acc.add(rows[self.key], rows[self.field])

    def end(self) -> np.ndarray:
        assert self.dtype is not None
        return self.acc.rows(self.dtype)


class TumblingWindow(Transform):
    """params: ``size`` (required, in units of ``time``), ``time`` ("ts"), ``key``, ``field``
    ("value"), ``lateness`` (0): see the module docstring."""

    keyed = True

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        dtype = input_dtype(inputs)
        key, field, time = (
            str(params.get(n, d)) for n, d in (("key", "key"), ("field", "value"), ("time", "ts"))
        )
        require_fields(dtype, key, field, time)
        if dtype[time].kind not in "iu":
            raise ValueError(f"event-time field {time!r} must be an integer, not {dtype[time]}")
        _int_param(params, "size", low=1)
        _int_param(params, "lateness", 0, low=0)
        return np.dtype(
            [
                ("key", dtype[key]),
                ("window_start", "<i8"),
                ("sum", _sum_dtype(dtype, field)),
                ("count", "<i8"),
            ]
        )

    def setup(self) -> None:
        p = self.user
        self.key = str(p.get("key", "key"))
        self.field = str(p.get("field", "value"))
        self.time = str(p.get("time", "ts"))
        self.size = int(p["size"])
        self.lateness = int(p.get("lateness", 0))
        self.windows: dict[int, dict[Any, list[Any]]] = {}
        self.max_time: list[int | None] = [None] * len(self.inputs)  # per input channel
        self.fired = np.iinfo(np.int64).min  # windows ending at or before this were emitted
        self.late = 0
        self.fired_early = 0  # windows emitted before the end of the stream

    def process(self, rows: np.ndarray, port: int) -> None:
        times = rows[self.time].astype(np.int64)
        starts = times - times % self.size
        fresh = starts + self.size > self.fired
        if not fresh.all():
            self.late += int(np.count_nonzero(~fresh))
            rows, starts, times = rows[fresh], starts[fresh], times[fresh]
            if not len(rows):
                return
        seen = self.max_time[self.current_input]
        top = int(times.max())
        self.max_time[self.current_input] = top if seen is None else max(seen, top)
        keys, values = rows[self.key], rows[self.field]
        order = np.lexsort((keys, starts))
        keys, starts, values = keys[order], starts[order], values[order]
        change = np.flatnonzero((keys[1:] != keys[:-1]) | (starts[1:] != starts[:-1])) + 1
        bounds = np.concatenate([[0], change])
        sums = np.add.reduceat(values, bounds)
        counts = np.diff(np.concatenate([bounds, [len(keys)]]))
        for k, w, s, c in zip(
            keys[bounds].tolist(),
            starts[bounds].tolist(),
            sums.tolist(),
            counts.tolist(),
            strict=True,
        ):
            acc = self.windows.setdefault(w, {}).get(k)
            if acc is None:
                self.windows[w][k] = [s, c]
            else:
                acc[0] += s
                acc[1] += c

    def after_step(self) -> np.ndarray | None:
        marks = [t for t, live in zip(self.max_time, self.live_inputs, strict=True) if live]
        known = [t for t in marks if t is not None]
        if not known or len(known) < len(marks):
            return None  # a channel still open has shown no event time yet
        watermark = min(known) - self.lateness
        rows = self._fire(lambda start: start + self.size <= watermark)
        self.fired_early += len(rows)
        return rows

    def end(self) -> np.ndarray:
        return self._fire(lambda start: True)

    def _fire(self, due: Callable[[int], bool]) -> np.ndarray:
        assert self.dtype is not None
        ready = [w for w in sorted(self.windows) if due(w)]
        out = []
        for w in ready:
            group = self.windows.pop(w)
            keys = sorted(group)
            rows = np.empty(len(keys), self.dtype)
            rows["key"] = keys
            rows["window_start"] = w
            rows["sum"] = [group[k][0] for k in keys]
            rows["count"] = [group[k][1] for k in keys]
            out.append(rows)
            self.fired = max(self.fired, w + self.size)
        rows = np.concatenate(out) if out else np.empty(0, self.dtype)
        return rows

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "late": self.late, "fired_early": self.fired_early}


class Map(Transform):
    """params: ``fn`` (module:function, rows -> rows), ``dtype`` (its output; default: the
    input's)."""

    stateless = True

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        dtype = input_dtype(inputs)
        load_function(params.get("fn"))
        return dtype if params.get("dtype") is None else dtype_from_wire(params["dtype"])

    def setup(self) -> None:
        self.fn = load_function(self.user["fn"])

    def process(self, rows: np.ndarray, port: int) -> np.ndarray:
        out = self.fn(rows)
        if not isinstance(out, np.ndarray) or out.dtype != self.dtype:
            got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
            raise TypeError(f"{self.user['fn']} returned {got}; the task declared {self.dtype}")
        return out


class Filter(Transform):
    """params: ``fn`` (module:function, rows -> boolean mask of the rows to keep)."""

    stateless = True

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        load_function(params.get("fn"))
        return input_dtype(inputs)

    def setup(self) -> None:
        self.fn = load_function(self.user["fn"])

    def process(self, rows: np.ndarray, port: int) -> np.ndarray:
        mask = np.asarray(self.fn(rows))
        if mask.dtype != np.bool_ or mask.shape != rows.shape:
            raise TypeError(f"{self.user['fn']} must return a boolean mask of the batch's length")
        kept: np.ndarray = rows[mask]
        return kept


class FileSink(Transform):
    """params: ``dir`` (default "/tmp/dataflow"); see ``zdf.dataflow.npyfile``."""

    _checkpoint: dict[str, Any] | None = None

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> None:
        input_dtype(inputs)
        if not isinstance(params.get("dir", "/tmp/dataflow"), str):
            raise ValueError("param 'dir' must be a path")
        return None

    def restore(self, state: dict[str, Any]) -> None:
        self._checkpoint = state

    def snapshot(self) -> dict[str, Any]:
        return self._state

    def open(self) -> None:
        flow = self.params["flow"]
        self._state: dict[str, Any] = {"started": True}
        if self._checkpoint is not None and self._checkpoint.get("done"):
            self.mark_done()  # the last attempt finished everything but its report
            self.finish(self._checkpoint.get("summary") or {})
            return
        out_dir = os.path.join(
            str(flow["params"].get("dir", "/tmp/dataflow")), str(flow["flow-id"])
        )
        safe_dir(out_dir)
        in_dtype = dtype_from_wire(flow["inputs"][0]["dtype"])
        self.file = StepFile(
            os.path.join(out_dir, f"{flow['name']}-{flow['instance']}.npy"), in_dtype
        )
        self.on_close(self.file.close)
        self._pieces: list[np.ndarray] = []
        self._take_file()

    def _take_file(self) -> None:
        if not self.file.try_lock():
            self.call_later(LOCK_RETRY, self._take_file)  # a zombie still holds it
            return
        if self._checkpoint is None:
            # No checkpoint: nothing of this job was written yet (an earlier run's file is
            # emptied); say so durably before writing, so that a restart knows to recover.
            self.file.start_fresh()
            self._resume = 0
            self.checkpoint(self.guard(lambda: FlowOperator.open(self)))
            return
        self._resume = self.file.recover()
        FlowOperator.open(self)
        self.rows_in = self.file.rows  # what earlier attempts wrote

    def start_step(self) -> int:
        return self._resume

    def process(self, rows: np.ndarray, port: int) -> None:
        self._pieces.append(rows)

    def step_done(self, step: int) -> None:
        pieces, self._pieces = self._pieces, []
        if self.ended_at is None:  # the closing step (nothing in it) is marked by "done"
            self.file.append_step(pieces)

    def completed(self) -> None:
        rows = self.file.seal()
        summary = {**self.summary(), "rows": rows, "path": self.file.path}
        self._state = {"done": True, "summary": summary}
        self.checkpoint(self.guard(lambda: self._done(summary)))

    def _done(self, summary: dict[str, Any]) -> None:
        self.mark_done()
        self.finish(summary)
