"""``sink-<s>`` on the public dataflow API: stream ``s`` into ``sink_<s>.bin``, behind
the DDL barrier.

The same sink as ``zdf.runtime.bench.sink`` (read its docstring for the barrier, the
gate and exactly-once; the file, the gate and the barrier are the same classes), as
a ``Transform`` without output. What changes is how it meets its input:

* a step is a binlog round; the rows of a step go through the gate as a batch did;
* it holds rows back while a barrier is open, and takes no step (``can_step``)
  while the gate holds ``max-held`` rows or more, nor before its file is locked
  and folded: its input's batches then wait unacknowledged, which stops the chain
  above it through the pipes' credit;
* a restarted sink resumes at the round that holds its resume gtid (the lowest
  gtid some table still needs, from its checkpoint: ``BenchParams.round_starts``
  maps it to its round), and drops the replayed rows each table already has, as
  the first sink did; its upstream chain is stateless and rolls back to that round;
* the end of the input is ``completed()``: the sink finishes once the gate is empty
  and it wrote every DDL it is the writer of, then waits for every sink's done
  flag as before.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from typing import Any

import numpy as np

from zdf.dataflow.operator import Transform
from zdf.files import write_file
from zdf.runtime.bench.barrier import Pair, SinkBarrier
from zdf.runtime.bench.gate import Stop, TableGate
from zdf.runtime.bench.latency import WriteFigures
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sink import LOCK_RETRY, sink_summary, summary_path
from zdf.runtime.bench.sinkfile import SinkFile, SinkState, file_summary
from zdf.runtime.bench.stages import record_input


class Sink(Transform):
    """params: the bench params, ``checkpoint-interval`` (seconds), ``max-held`` (rows);
    instance ``s`` is stream ``s``."""

    gate: TableGate
    barrier: SinkBarrier
    _checkpoint: dict[str, Any] | None = None
    _final: dict[str, Any] | None = None

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        record_input(inputs)
        return None

    def restore(self, state: dict[str, Any]) -> None:
        self._checkpoint = state

    def snapshot(self) -> dict[str, Any]:
        # Once done, every save (a periodic one still retrying, too) says so.
        return self._final if self._final is not None else self.state.to_wire()

    def open(self) -> None:
        flow = self.params["flow"]
        self.bench = p = BenchParams.from_params(flow["params"])
        self.stream = int(flow["instance"])
        self.interval = float(flow["params"].get("checkpoint-interval", 1.0))
        self.max_held = int(flow["params"].get("max-held", 16 * p.batch_size))
        self.path = p.sink_path(self.stream)
        self.state = SinkState(p.tables)
        if self._checkpoint is not None:
            self.state = SinkState.from_wire(p.tables, self._checkpoint)
        self.last_ts = 0
        self.owed: dict[Pair, np.ndarray] = {}  # DDL rows this sink writes, barrier open
        self._floor = np.full(p.tables, -1, np.int64)  # per table: written before we started
        self._floor_max = -1
        self._admitted = -1  # the last gtid through the gate (the input is in gtid order)
        self.figures = WriteFigures()  # what this attempt wrote, kept as it writes
        self._started = False
        self._input_ended = False
        self._finishing = False
        self._saving = False
        self.file: SinkFile | None = None
        if self._checkpoint is not None and self._checkpoint.get("done"):
            self.mark_done()  # the last attempt finished everything but its report
            self.finish(self._checkpoint.get("summary") or {})
            return
        super().open()
        os.makedirs(p.out_dir, mode=0o700, exist_ok=True)
        self.file = SinkFile(self.path)
        self.on_close(self.file.close)
        self._take_file()

    def start_step(self) -> int:
        """The round holding the lowest gtid a table still needs (0 without a checkpoint)."""
        if self._checkpoint is None:
            return 0
        starts = self.bench.round_starts(self.stream).tolist()
        return max(0, bisect.bisect_right(starts, self.state.resume_gtid) - 1)

    # -- taking over the file --------------------------------------------------------
    def _take_file(self) -> None:
        assert self.file is not None
        if not self.file.try_lock():
            self.call_later(LOCK_RETRY, self._take_file)  # a zombie still holds it
            return
        if self._checkpoint is None:
            self.file.truncate(0)  # nothing of this job was written (see ``sink``)
            self.checkpoint(self.guard(self._start))
            return
        self.last_ts = self.file.recover(self.state)
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
        self._started = True
        self.call_every(self.interval, self._commit)
        self.progress(records=float(self.state.records))
        self.pump()

    # -- steps ---------------------------------------------------------------------------
    def can_step(self) -> bool:
        return self._started and self.gate.held_rows < self.max_held

    def process(self, rows: np.ndarray, port: int) -> np.ndarray | None:
        tid = rows["tid"]
        if tid.min() < 0 or tid.max() >= self.bench.tables:
            raise ValueError(f"sink {self.stream}: table id out of range in a batch")
        self._admit(rows)
        return None

    def step_progress(self) -> dict[str, float]:
        return {"records": float(self.state.records)}

    def completed(self) -> None:
        self._input_ended = True
        self._maybe_finish()

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

    def _admit(self, rows: np.ndarray) -> None:
        gtid = rows["gtid"]
        if gtid[-1] <= self._admitted:
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
                self.barrier.announce(ready)  # after the write: "written" is a fact
            pieces: list[np.ndarray] = []
            stops: list[Stop] = []
            for t, v in learned:
                passed, new = self.gate.release(t, v)
                pieces.extend(passed)
                stops.extend(new)
            if pieces:
                self._write(pieces)
            self._stopped(stops)
        self.progress(records=float(self.state.records))
        self.pump()
        self._maybe_finish()

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
        if not self._input_ended or self.owed or self.gate.held_rows or self._finishing:
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
        self._final = {**self.state.to_wire(), "done": True, "summary": summary}
        self.checkpoint(self.guard(lambda: self._done(summary)))

    def _done(self, summary: dict[str, Any]) -> None:
        self.mark_done()
        sinks = [f"sink-{s}" for s in range(self.bench.streams)]
        self.when_done(sinks, lambda: self.finish(summary))
