"""``sink-<s>``: writes stream ``s`` to ``<sink-dir>/<flow-id>/sink_<s>.bin``, behind the DDL gate.

Each batch becomes ``SINK_DTYPE`` rows (the record's bytes plus ``sink_ts``, the
write time in ns, strictly increasing per file) written with one ``pwrite``.

The DDL barrier lives here, at the very end of the chain. Batches go through
the sink's ``TableGate`` (``zdf.runtime.bench.gate``): the data of an open table
is written at once; at a DDL (t, v) the table stops, and its later rows are
held in the sink until the DDL is written. The sinks settle each barrier among
themselves (``zdf.runtime.bench.barrier``): "arrived" to the DDL's writer sink,
which writes the DDL when every stream has arrived and answers "written" to
all, whose gates then write the held rows at once. Held rows are bounded: above
``max-held`` rows the sink takes no more input (its batches wait unacknowledged,
which stops the chain above it through the pipe credits). This cannot deadlock
because DDL (t, v) sits in the same binlog round in every stream: the stream
that is furthest behind has already been passed by all others at its stops,
so its barriers complete and it moves on.

Exactly once across failures (see ``zdf.runtime.bench.sinkfile``):

* the file is the state: a (re)started sink locks it, folds what is in it past
  its checkpoint into per-table positions, and subscribes to its syncer from
  ``resume_gtid``; rows at or below a table's position are replays and dropped
  (and so are rows the gate already holds, on a resubscription).
  A table's position moves on written rows only (data, and DDLs this sink
  wrote), never on a DDL that merely arrived: so the replay always starts at or
  before a DDL whose barrier may still be open, and every DDL before the replay
  point is written;
* every ``checkpoint-interval`` it commits ``length`` together with those
  positions (one small write per second, never per batch);
* a sink starts writing only once its first checkpoint is durable, so a sink
  with no checkpoint knows the file holds nothing of this job and truncates it;
* DDLs: the gate starts with the DDLs of its own file as written and learns the
  rest from the other sinks (their hello, "written", their done flags); a
  replayed DDL not yet known written stops its table again and its writer,
  who knows, answers "written" at once.

At the end of its input (and once it wrote every DDL it is the writer of) the
sink takes its figures (kept as it writes; read back from the file after a
restart), writes ``summary_<s>.json``, commits
``done`` and raises its done flag. It finishes only when every sink has raised
its flag, so that it is still there to answer a peer that needs a barrier
message from it; the coordinator merges the summaries.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Any

import numpy as np

from zdf.files import write_file
from zdf.runtime.bench.barrier import Pair, SinkBarrier
from zdf.runtime.bench.gate import Stop, TableGate
from zdf.runtime.bench.latency import LatencyHistogram, WriteFigures
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkfile import SinkFile, SinkState, file_summary
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import InPort

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


class Sink(Operator):
    """params: bench params, ``stream``, ``checkpoint-interval`` (seconds), ``max-held`` (rows)."""

    inp: InPort
    gate: TableGate
    barrier: SinkBarrier
    _checkpoint: dict[str, Any] | None = None

    def restore(self, state: dict[str, Any]) -> None:
        self._checkpoint = state

    _final: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        # Once done, every save (a periodic one still retrying, too) says so.
        return self._final if self._final is not None else self.state.to_wire()

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        self.interval = float(self.params.get("checkpoint-interval", 1.0))
        self.max_held = int(self.params.get("max-held", 16 * p.batch_size))
        self.path = p.sink_path(self.stream)
        self.state = SinkState(p.tables)
        self.last_ts = 0
        self.owed: dict[Pair, np.ndarray] = {}  # DDL rows this sink writes, barrier open
        self._inbox: deque[np.ndarray] = deque()  # batches not yet through the gate
        self._floor = np.full(p.tables, -1, np.int64)  # per table: written before we started
        self._floor_max = -1
        self._admitted = -1  # the last gtid through the gate (the input is in gtid order)
        # The figures of what this attempt wrote, kept as it writes.
        self.figures = WriteFigures()
        self._input_ended = False
        self._finishing = False
        self._saving = False
        self.file: SinkFile | None = None
        if self._checkpoint is not None and self._checkpoint.get("done"):
            self.mark_done()  # the last attempt finished everything but its report
            self.finish(self._checkpoint.get("summary") or {})
            return
        os.makedirs(p.out_dir, mode=0o700, exist_ok=True)
        self.file = SinkFile(self.path)
        self.on_close(self.file.close)
        self._take_file()

    # -- taking over the file --------------------------------------------------------
    def _take_file(self) -> None:
        assert self.file is not None
        if not self.file.try_lock():
            self.call_later(LOCK_RETRY, self._take_file)  # a zombie still holds it
            return
        if self._checkpoint is None:
            self.file.truncate(0)  # nothing of this job was written: see the docstring
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
        self.inp = self.in_port(
            f"syncer-{self.stream}",
            "out",
            0,
            on_batch=self._on_batch,
            on_eos=self._on_eos,
            window=p.window,
            resume=lambda: self.state.resume_gtid,
        )
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

    def _on_batch(self, rows: np.ndarray, pos: int, next_pos: int) -> None:
        tid = rows["tid"]
        if len(rows) and (tid.min() < 0 or tid.max() >= self.bench.tables):
            raise ValueError(f"sink {self.stream}: table id out of range in a batch")
        self._inbox.append(rows)
        self._pump()

    def _pump(self) -> None:
        """Take batches through the gate while it holds less than ``max-held`` rows."""
        taken = False
        while self._inbox and self.gate.held_rows < self.max_held:
            self._admit(self._inbox.popleft())
            self.consumed()
            taken = True
        if taken:
            self.progress(records=float(self.state.records))
        self._maybe_finish()

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

    def consumed(self) -> None:
        """A batch went through the gate: give the syncer its credit back (tests slow this)."""
        self.inp.ack()

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
        self._pump()

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
    def _on_eos(self, pos: int) -> None:
        self._input_ended = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if (
            not self._input_ended
            or self._inbox
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
        self.inp.ack_eos()
        self._final = {**self.state.to_wire(), "done": True, "summary": summary}
        self.checkpoint(self.guard(lambda: self._done(summary)))

    def _done(self, summary: dict[str, Any]) -> None:
        self.mark_done()
        sinks = [f"sink-{s}" for s in range(self.bench.streams)]
        self.when_done(sinks, lambda: self.finish(summary))
