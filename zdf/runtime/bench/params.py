"""The benchmark's parameters as every bench task receives them (one place to parse)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from zdf.files import check_name


@dataclass(frozen=True)
class BenchParams:
    flow_id: str
    tables: int
    streams: int
    rcd_cnt: int
    ddl_freq: int
    batch_size: int
    rate: float
    sink_dir: str
    window: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BenchParams:
        return cls(
            flow_id=check_name(str(params["flow-id"]), "flow-id"),
            tables=int(params["tables"]),
            streams=int(params["streams"]),
            rcd_cnt=int(params["rcd-cnt"]),
            ddl_freq=int(params["ddl-freq"]),
            batch_size=int(params["batch-size"]),
            rate=float(params.get("rate", 0.0)),
            sink_dir=str(params["sink-dir"]),
            window=int(params.get("window", 8)),
        )

    def to_params(self) -> dict[str, Any]:
        return {
            "flow-id": self.flow_id,
            "tables": self.tables,
            "streams": self.streams,
            "rcd-cnt": self.rcd_cnt,
            "ddl-freq": self.ddl_freq,
            "batch-size": self.batch_size,
            "rate": self.rate,
            "sink-dir": self.sink_dir,
            "window": self.window,
        }

    @property
    def versions(self) -> int:
        """DDL versions per table: one before every data pk that is a multiple of ddl-freq."""
        return self.rcd_cnt // self.ddl_freq

    @property
    def producer_batches(self) -> int:
        return math.ceil(self.rcd_cnt / self.batch_size)

    @property
    def out_dir(self) -> str:
        return os.path.join(self.sink_dir, self.flow_id)

    def sink_path(self, stream: int) -> str:
        return os.path.join(self.out_dir, f"sink_{stream}.bin")

    def writer(self, table: int, version: int) -> int:
        """The stream whose sink writes DDL (table, version): version by version in turn.

        One writer for a version of every table: the tables move in step (their DDLs
        sit at the same pks), so one round of the barrier costs one message to
        the writer per sink and one back, whatever the number of tables."""
        return version % self.streams

    def last_written_by(self, stream: int, table: int) -> int:
        """The highest DDL version of ``table`` that ``stream``'s sink writes (0: none)."""
        top = self.versions
        for v in range(top, max(0, top - self.streams), -1):
            if self.writer(table, v) == stream:
                return v
        return 0

    def streams_of(self, table: int, pks: np.ndarray) -> np.ndarray:
        """Which stream carries each data pk of ``table`` (deterministic, even)."""
        return (pks + table) % self.streams  # type: ignore[no-any-return]

    def batch_rows(self, table: int, k: Any, stream: Any) -> np.ndarray:
        """Rows of ``producer_batch(table, k, stream)`` in closed form: the data pks of
        batch ``k`` that ``streams_of`` gives ``stream``, plus the batch's DDLs.
        ``k`` and ``stream`` may be arrays (numpy broadcasting)."""
        k = np.asarray(k, dtype=np.int64)
        lo = k * self.batch_size + 1
        hi = np.minimum((k + 1) * self.batch_size, self.rcd_cnt)
        s, f = self.streams, self.ddl_freq
        first = lo + (stream - table - lo) % s  # the first pk >= lo of this stream
        data = np.where(first <= hi, (hi - first) // s + 1, 0)
        return data + hi // f - (lo - 1) // f  # type: ignore[no-any-return]

    def round_rows(self, stream: int) -> np.ndarray:
        """Rows of each binlog round of ``stream``: per producer batch k, the rows of
        ``producer_batch(t, k, stream)`` summed over the tables (``batch_rows``)."""
        k = np.arange(self.producer_batches, dtype=np.int64)
        return sum(  # type: ignore[return-value]
            (self.batch_rows(t, k, stream) for t in range(self.tables)),
            np.zeros(len(k), np.int64),
        )

    def round_starts(self, stream: int) -> np.ndarray:
        """The gtid each binlog round of ``stream`` starts at, and the stream's end."""
        return np.concatenate([[0], np.cumsum(self.round_rows(stream))])
