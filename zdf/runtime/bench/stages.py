"""The benchmark job's pipeline stages on the public dataflow API (``zdf.dataflow``).

    producer (Source, one per table) ──custom──► binlog ──► receive ──► syncer ──► sink
                                                 (one chain per stream, forward edges)

These are the operators ``build_bench_job`` wires as a dataflow graph (the sink,
with the DDL barrier, is ``zdf.runtime.bench.flowsink``). They use what any user's
operator uses: ``Source``/``Transform``, their steps, a ``custom`` edge and a
shared pace (``Source.pace_start``/``set_pace``), nothing of the pipes below.

Steps carry the benchmark's rounds: step ``k`` of producer ``t`` is its batch
``k`` (``producer_batch_by_stream``), and step ``k`` of binlog ``s`` is round ``k``, the
producers' batches ``k`` for stream ``s`` in table order (the step engine takes a
step's pieces input by input, and the inputs are the producers in order). So the
merge is deterministic without any state, and the gtids of round ``k`` start at
``BenchParams.round_starts(s)[k]``, a closed form of the batches' lengths: the
binlog is ``stateless`` (output step k depends on input step k alone), so a
restarted sink's replay rolls the chain back to the round it asks for, not to
the start. The receive and the syncer pass batches on (the syncer checks their
table ids).

Exactly as the first benchmark operators (``producer``, ``binlog``, ``receive``,
``syncer``): the same records, the same gtids, the same sink files.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from zdf.dataflow.operator import Source, Transform, input_dtype
from zdf.records import RECORD_DTYPE
from zdf.runtime.batches import concat_rows
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.producer import PACE, PACE_GRACE, producer_batch_by_stream


def record_input(inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
    """The inputs' dtype, which must be the benchmark's records."""
    dtype = input_dtype(inputs)
    if dtype != RECORD_DTYPE:
        raise ValueError(f"expects zdf.records.RECORD_DTYPE rows, not {dtype}")
    return dtype


class Producer(Source):
    """params: the bench params (``BenchParams``); instance ``t`` is table ``t``.

    Its output edge is ``custom``: a data row goes to the stream ``streams_of`` names,
    a DDL to every stream. Its batch is laid out for that edge: each stream's rows in
    turn, the DDLs in each (``producer_batch_by_stream``), so that ``route`` hands each
    stream a slice of it, without a copy. Paced producers share producer 0's schedule (its ``t0``,
    published as the endpoint ``pace``), since the binlogs merge them in rounds."""

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        BenchParams.from_params(params)  # every key there, or the job is refused
        return RECORD_DTYPE

    def setup(self) -> None:
        self.bench = BenchParams.from_params(self.user)
        self.batch_rows = self.bench.batch_size
        super().setup()
        if self.instance == 0 and self.t0 is not None and self.rate > 0:
            self.ctx.publish_endpoint(PACE, repr(self.t0))  # a restart: the schedule it had

    def pace_start(self) -> float | None:
        if self.instance == 0:
            return time.time() + float(self.user.get("pace-grace", PACE_GRACE))
        self.ctx.resolve_endpoint("producer-0", PACE, self.guard(self._paced_from))
        return None

    def _paced_from(self, t0: str) -> None:
        self.set_pace(float(t0))

    def steps(self) -> int:
        return self.bench.producer_batches

    def batch(self, step: int) -> np.ndarray:
        return producer_batch_by_stream(self.bench, self.instance, step, time.time_ns())

    def route(self, rows: np.ndarray, channels: int, step: int) -> list[np.ndarray]:
        # The batch holds each stream's rows in turn (DDLs in each): slices, no copy.
        lengths = self.bench.batch_rows(self.instance, step, np.arange(channels))
        bounds = [0, *np.cumsum(lengths).tolist()]
        if bounds[-1] != len(rows):
            raise ValueError(f"batch {step} of {len(rows)} rows, expected {bounds[-1]}")
        return [rows[bounds[s] : bounds[s + 1]] for s in range(channels)]

    def step_progress(self) -> dict[str, float]:
        return {"batches": float(self.step)}

    def summary(self) -> dict[str, Any]:
        p = self.bench
        return {"records": p.rcd_cnt, "ddls": p.versions, "batches": p.producer_batches}


class RecordStage(Transform):
    """A stateless stage of records in, records out: output step s is input step s's."""

    stateless = True

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        return record_input(inputs)

    def summary(self) -> dict[str, Any]:
        return {"records": self.rows_in}


class Binlog(RecordStage):
    """params: the bench params; instance ``s`` is stream ``s``."""

    def setup(self) -> None:
        self.bench = BenchParams.from_params(self.user)
        self.starts = self.bench.round_starts(self.instance).tolist()
        self._pieces: list[np.ndarray] = []

    def process(self, rows: np.ndarray, port: int) -> np.ndarray | None:
        self._pieces.append(rows)
        return None

    def after_step(self) -> np.ndarray | None:
        pieces, self._pieces = self._pieces, []
        if not pieces:
            return None
        # A copy either way: the log owns its rows (the producers keep theirs for replay).
        chunk = concat_rows(pieces) if len(pieces) > 1 else pieces[0].copy()
        start, end = self.starts[self.step], self.starts[self.step + 1]
        if end - start != len(chunk):
            raise ValueError(
                f"stream {self.instance} round {self.step}: {len(chunk)} rows, expected"
                f" {end - start}"
            )
        chunk["gtid"] = np.arange(start, end, dtype=np.int64)
        return chunk

    def summary(self) -> dict[str, Any]:
        return {"records": self.rows_out, "rounds": self.step}


class Receive(RecordStage):
    """Stream ``s`` from its binlog to its syncer, as it came (zero copy)."""


class Syncer(RecordStage):
    """Stream ``s`` to its sink, each batch's table ids checked (a bad one fails the task)."""

    def setup(self) -> None:
        self.tables = int(self.user["tables"])

    def process(self, rows: np.ndarray, port: int) -> np.ndarray | None:
        tid = rows["tid"]
        if tid.min() < 0 or tid.max() >= self.tables:
            raise ValueError(f"stream {self.instance}: table id out of range in a batch")
        return rows
