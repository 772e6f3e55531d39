"""``SinkCore``: what the benchmark's two sinks share (their file, gate, barrier and end).

The first sink (``zdf.runtime.bench.sink``, a plain ``Operator`` on a pipe) and the
one on the dataflow API (``zdf.runtime.bench.flowsink``, a ``Transform``) differ only
in how batches reach them and how they stop taking more; everything that makes the
output exact is here, once: taking over the file (``sinkfile``), the replay filter
(``_admit``), the gate and the barrier (``gate``, ``barrier``), the periodic commit
and the end (summary, ``done`` checkpoint, done flag, waiting for every sink's).
``sink``'s docstring tells how they work together.

A sink subclass calls ``_init_sink`` then ``_open_file`` from its ``open()``, and
says how its input behaves: ``_open_input`` (once the file is taken),
``_resume_input`` (the gate may have room again), ``_holding_input`` (batches taken
in but not through the gate yet) and ``_input_consumed`` (at the end).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from zdf.files import write_file
from zdf.runtime.bench.barrier import Pair, SinkBarrier
from zdf.runtime.bench.gate import Stop, TableGate
from zdf.runtime.bench.latency import LatencyHistogram, WriteFigures
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkfile import SinkFile, SinkState, file_summary
from zdf.runtime.operator import Operator

LOCK_RETRY = 0.02
"""How often a sink waiting for its file (held by a zombie) tries the lock again."""


def sink_summary(
    records: int, ddls: int, first_ts: int, last_ts: int, hist: LatencyHistogram
) -> dict[str, Any]:
    """The figures DESIGN.md names, from counts and times in ns."""
    elapsed = max(0, last_ts - first_ts) / 1e9 if records or ddls else 0.0
    return {
        "records": records,
        "ddls": ddls,
        "elapsed_s": round(elapsed, 6),
        "records_per_s": round(records / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms_p50": hist.percentile_ms(50),
        "latency_ms_p99": hist.percentile_ms(99),
    }


def summary_path(p: BenchParams, stream: int) -> str:
    return os.path.join(p.out_dir, f"summary_{stream}.json")


class SinkCore(Operator):
    """The shared part of a benchmark sink (see the module docstring)."""

    bench: BenchParams
    gate: TableGate
    barrier: SinkBarrier
    _checkpoint: dict[str, Any] | None = None
    _final: dict[str, Any] | None = None

    def restore(self, state: dict[str, Any]) -> None:
        self._checkpoint = state

    def snapshot(self) -> dict[str, Any]:
        # Once done, every save (a periodic one still retrying, too) says so.
        return self._final if self._final is not None else self.state.to_wire()

    # -- for the subclasses --------------------------------------------------------------
    def _init_sink(self, p: BenchParams, stream: int, params: dict[str, Any]) -> bool:
        """Set up the sink's state; False when its last attempt finished (it is done now)."""
        self.bench = p
        self.stream = stream
        self.interval = float(params.get("checkpoint-interval", 1.0))
        self.max_held = int(params.get("max-held", 16 * p.batch_size))
        self.path = p.sink_path(stream)
        self.state = SinkState(p.tables)
        self.last_ts = 0
        self.owed: dict[Pair, np.ndarray] = {}  # DDL rows this sink writes, barrier open
        self._floor = np.full(p.tables, -1, np.int64)  # per table: written before we started
        self._floor_max = -1
        self._admitted = -1  # the last gtid through the gate (the input is in gtid order)
        self.figures = WriteFigures()  # what this attempt wrote, kept as it writes
        self._input_ended = False
        self._finishing = False
        self._saving = False
        self.file: SinkFile | None = None
        if self._checkpoint is not None and self._checkpoint.get("done"):
            self.mark_done()  # the last attempt finished everything but its report
            self.finish(self._checkpoint.get("summary") or {})
            return False
        return True

    def _open_file(self) -> None:
        os.makedirs(self.bench.out_dir, mode=0o700, exist_ok=True)
        self.file = SinkFile(self.path)
        self.on_close(self.file.close)
        self._take_file()

    def _open_input(self) -> None:
        """The file is taken and the barrier made: start taking input."""
        raise NotImplementedError

    def _resume_input(self) -> None:
        """The gate may hold less now: take input again if it waits."""
        raise NotImplementedError

    def _holding_input(self) -> bool:
        """Batches taken in that have not gone through the gate yet."""
        return False

    def _input_consumed(self) -> None:
        """The input ended and all of it went through the gate."""

    # -- taking over the file --------------------------------------------------------
    def _take_file(self) -> None:
        assert self.file is not None
        if not self.file.try_lock():
            self.call_later(LOCK_RETRY, self._take_file)  # a zombie still holds it
            return
        if self._checkpoint is None:
            self.file.truncate(0)  # nothing of this job was written: see ``sink``
            self.checkpoint(self.guard(self._start))
            return
        self.state = SinkState.from_wire(self.bench.tables, self._checkpoint)
        self.last_ts = self.file.recover(self.state)
        # Guarded, so that what the barrier learns while it is being made (a peer
        # already done, say) is acted on once ``_start`` has finished, not halfway.
        self.guard(self._start)()

    def _start(self) -> None:
        p = self.bench
        self._floor = self.state.last_gtid.copy()
        self._floor_max = int(self._floor.max())
        self.gate = TableGate(p.tables)
        self.gate.written = self.state.ddl_written.tolist()
        self.barrier = SinkBarrier(
            self,
            p,
            self.stream,
            self.state.ddl_written,
            waiting=self.gate.waiting,
            on_change=self._settle,
        )
        self._open_input()
        self.call_every(self.interval, self._commit)
        self.progress(records=float(self.state.records))

    # -- writing ------------------------------------------------------------------------
    def _write(self, pieces: list[np.ndarray], *, ddl: bool = False) -> None:
        """Append ``pieces`` (data pieces of one table each, or DDL rows) in one write."""
        assert self.file is not None
        now = max(time.time_ns(), self.last_ts + 1)
        out = self.file.append(pieces, self.state.length, now)
        self.last_ts = now
        self.figures.wrote(now, out, data=not ddl)
        if ddl:
            self.state.fold(out)
        else:
            self.state.advance(pieces)

    def _check_tables(self, rows: np.ndarray) -> None:
        tid = rows["tid"]
        if len(rows) and (tid.min() < 0 or tid.max() >= self.bench.tables):
            raise ValueError(f"sink {self.stream}: table id out of range in a batch")

    def _admit(self, rows: np.ndarray) -> None:
        gtid = rows["gtid"]
        if len(rows) == 0 or gtid[-1] <= self._admitted:
            return
        if gtid[0] <= self._admitted or gtid[0] <= self._floor_max:
            # A replay: drop what is written, or already through the gate.
            tid = rows["tid"].astype(np.intp)
            rows = rows[(gtid > self._admitted) & (gtid > self._floor[tid])]
            if len(rows) == 0:
                return
        self._admitted = int(rows["gtid"][-1])
        passed, stops = self.gate.admit(rows)
        if passed:
            self._write(passed)
        self._stopped(stops)

    def _stopped(self, stops: list[Stop]) -> None:
        """Tables stopped at these DDLs: everything before them is written."""
        if not stops:
            return
        written = self.state.ddl_written
        for stop in stops:
            t, v = stop.table, stop.version
            if self.bench.writer(t, v) == self.stream and v > written[t]:
                self.owed[(t, v)] = stop.row.copy()  # not the whole batch it is a view of
        self.barrier.arrive([(stop.table, stop.version) for stop in stops])
        self.barrier.flush()

    def _settle(self) -> None:
        """Write the DDLs whose barrier completed here and the rows the barrier released."""
        while True:
            ready, learned = self.barrier.take()
            if not ready and not learned:
                break
            if ready:
                rows = [self.owed.pop(pair) for pair in ready if pair in self.owed]
                if rows:
                    self._write(rows, ddl=True)
                # After the write, so that "written" is a fact; the barrier hands these
                # back as learned on the next turn of this loop.
                self.barrier.announce(ready)
            pieces: list[np.ndarray] = []
            stops: list[Stop] = []
            for t, v in learned:
                passed, new = self.gate.release(t, v)
                pieces.extend(passed)
                stops.extend(new)
            if pieces:
                self._write(pieces)
            self._stopped(stops)
        self._resume_input()

    # -- checkpoints -----------------------------------------------------------------------
    def _commit(self) -> None:
        """Commit the file length with the positions at it (one in flight at a time)."""
        if self._saving or self._finishing:
            return
        self._saving = True
        self.checkpoint(self.guard(self._saved))

    def _saved(self) -> None:
        self._saving = False

    # -- the end -----------------------------------------------------------------------
    def _maybe_finish(self) -> None:
        if (
            not self._input_ended
            or self._holding_input()
            or self.owed
            or self.gate.held_rows
            or self._finishing
        ):
            return
        self._finishing = True
        # A first attempt wrote the whole file, so its running figures are exact; a
        # restarted one reads the file back (its predecessors' rows are in it too).
        figures = self.figures.as_dict() if self._checkpoint is None else file_summary(self.path)
        summary = sink_summary(
            figures["records"],
            figures["ddls"],
            figures["first_ts"],
            figures["last_ts"],
            figures["hist"],
        )
        summary.update(stream=self.stream, bytes=figures["bytes"])
        write_file(
            summary_path(self.bench, self.stream),
            json.dumps(
                {
                    **summary,
                    "first_ts": figures["first_ts"],
                    "last_ts": figures["last_ts"],
                    "hist": figures["hist"].to_wire(),
                }
            ),
        )
        self._input_consumed()
        self._final = {**self.state.to_wire(), "done": True, "summary": summary}
        self.checkpoint(self.guard(lambda: self._done(summary)))

    def _done(self, summary: dict[str, Any]) -> None:
        self.mark_done()
        sinks = [f"sink-{s}" for s in range(self.bench.streams)]
        self.when_done(sinks, lambda: self.finish(summary))
