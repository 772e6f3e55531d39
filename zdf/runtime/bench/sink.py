"""``sink-<s>``: writes stream ``s`` to ``<sink-dir>/<flow-id>/sink_<s>.bin``.

Each batch becomes ``SINK_DTYPE`` rows (the record's bytes plus ``sink_ts``, the
write time in ns, strictly increasing per file) written with one ``pwrite``.
Barrier side: the DDLs in a batch are not written with it; after the batch's
data is written the sink tells the coordinator they *arrived* (so "arrived"
means "everything before it in this stream is written"). The sink chosen by
``BenchParams.writer`` keeps its copy of the DDL row and writes it when the
coordinator says ``write``, then answers ``written``.

Exactly once across failures (see ``zdf.runtime.bench.sinkfile``):

* the file is the state: a (re)started sink locks it, folds what is in it past
  its checkpoint into per-table positions, and subscribes to its syncer from
  ``resume_gtid``; rows at or below a table's position are replays and dropped.
  A table's position moves on written rows only (data, and DDLs this sink
  wrote), never on a DDL that merely arrived: so the replay always starts at or
  before a DDL whose barrier may still be open, and every DDL before the replay
  point is written — which is what lets the replaying syncer start with every
  table open;
* every ``checkpoint-interval`` it commits ``length`` together with those
  positions (one small write per second, never per batch);
* a sink starts writing only once its first checkpoint is durable, so a sink
  with no checkpoint knows the file holds nothing of this job and truncates it;
* DDLs: an arrival is reported again for a replayed DDL (its syncer, replaying,
  waits at it again and the coordinator releases it at once); a ``write`` for a
  DDL already in the file is answered ``written`` without writing it again;
  on (re)connecting to the coordinator the sink says which DDLs it has written
  and which arrivals are still open, so a restarted coordinator rebuilds the
  barrier from the sinks.

At the end of its input the sink reads its file back for its figures, writes
``summary_<s>.json``, commits ``done`` and raises its done flag; the coordinator
merges the summaries once every sink is done.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from zdf.records import DDL
from zdf.runtime.batches import concat_rows
from zdf.runtime.bench.latency import LatencyHistogram
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkfile import SinkFile, SinkState, file_summary
from zdf.runtime.link import PeerLink
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import InPort
from zdf.wire.rpc import Call

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
    """params: bench params, ``stream`` and ``checkpoint-interval`` (seconds)."""

    inp: InPort
    coord: PeerLink
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
        self.path = p.sink_path(self.stream)
        self.state = SinkState(p.tables)
        self.last_ts = 0
        self.owed: dict[tuple[int, int], np.ndarray] = {}  # DDL rows this sink must write
        self.requested: set[tuple[int, int]] = set()  # asked to write before the row came
        self.open_arrivals: dict[int, int] = {}  # table -> DDL version arrived, not yet passed
        self._input_ended = False
        self._finishing = False
        self._saving = False
        self.file: SinkFile | None = None
        if self._checkpoint is not None and self._checkpoint.get("done"):
            self.mark_done()  # the last attempt finished everything but its report
            self.finish(self._checkpoint.get("summary") or {})
            return
        os.makedirs(p.out_dir, exist_ok=True)
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
        self._start()

    def _start(self) -> None:
        p = self.bench
        self.coord = self.link(
            "coordinator", "coord", {"write": self._on_write}, on_connect=self._hello
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

    def _hello(self, link: PeerLink) -> None:
        link.notify(
            "hello",
            {
                "role": "sink",
                "stream": self.stream,
                "attempt": self.ctx.attempt,
                "written": self.state.ddl_written.tolist(),
            },
        )
        if self.open_arrivals:
            pairs = [[t, v] for t, v in self.open_arrivals.items()]
            link.notify("arrive", {"stream": self.stream, "pairs": pairs})

    # -- writing ------------------------------------------------------------------------
    def _write(self, rows: np.ndarray) -> None:
        assert self.file is not None
        now = max(time.time_ns(), self.last_ts + 1)
        out = self.file.append(rows, self.state.length, now)
        self.last_ts = now
        self.state.fold(out)

    def _on_batch(self, rows: np.ndarray, pos: int, next_pos: int) -> None:
        state = self.state
        tid = rows["tid"].astype(np.intp)
        if tid.min() < 0 or tid.max() >= self.bench.tables:
            raise ValueError(f"sink {self.stream}: table id out of range in a batch")
        is_ddl = rows["tp"] == DDL
        any_ddl = bool(is_ddl.any())
        fresh = rows["gtid"] > state.last_gtid[tid]  # the rest was taken before a replay
        take = fresh & ~is_ddl if any_ddl else fresh
        data = rows if take.all() else rows[take]
        if len(data):
            self._write(data)
            if self.open_arrivals:  # data of a table after its DDL: that barrier is passed
                present = np.bincount(tid[take], minlength=self.bench.tables)
                for t in [t for t in self.open_arrivals if present[t]]:
                    del self.open_arrivals[t]
        if any_ddl:
            self._arrived(rows[is_ddl], fresh[is_ddl])
        self.consumed()
        self.progress(records=float(state.records))

    def _arrived(self, ddl: np.ndarray, fresh: np.ndarray) -> None:
        """Report every DDL row (replayed ones too: their syncer waits at them again)."""
        state, pairs, ready = self.state, [], []
        for i, (t, v) in enumerate(
            zip(ddl["tid"].tolist(), ddl["schema_ver"].tolist(), strict=True)
        ):
            pairs.append([t, v])
            if fresh[i]:
                # Not taken into last_gtid: until its barrier completes, a replay must
                # bring the DDL again so that the replaying syncer waits at it again.
                self.open_arrivals[t] = v
            mine = self.bench.writer(t, v) == self.stream
            if mine and v > state.ddl_written[t] and (t, v) not in self.owed:
                self.owed[(t, v)] = ddl[i : i + 1].copy()
                if (t, v) in self.requested:
                    ready.append([t, v])
        self.coord.notify("arrive", {"stream": self.stream, "pairs": pairs})
        if ready:
            self._write_ddls(ready)

    def consumed(self) -> None:
        """The batch is written: give the syncer its credit back (tests slow this down)."""
        self.inp.ack()

    def _on_write(self, call: Call) -> None:
        pairs = call.body.get("pairs") if isinstance(call.body, dict) else None
        if not isinstance(pairs, list):
            raise ValueError("write without pairs")
        self._write_ddls(pairs)

    def _write_ddls(self, pairs: list[Any]) -> None:
        state, rows, done = self.state, [], []
        for t, v in pairs:
            if self.bench.writer(t, v) != self.stream or not 0 <= t < self.bench.tables:
                raise ValueError(f"sink {self.stream} is not the writer of DDL ({t}, {v})")
            if v <= state.ddl_written[t]:
                done.append([t, v])  # already in the file (written before a restart)
                continue
            row = self.owed.pop((t, v), None)
            if row is None:
                self.requested.add((t, v))  # its row is still ahead in the replay
                continue
            self.requested.discard((t, v))
            rows.append(row)
            done.append([t, v])
        if rows:
            self._write(concat_rows(rows))
        if done:
            self.coord.notify("written", {"stream": self.stream, "pairs": done})
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
    def _on_eos(self, pos: int) -> None:
        self._input_ended = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if not self._input_ended or self.owed or self.requested or self._finishing:
            return
        self._finishing = True
        figures = file_summary(self.path)
        summary = sink_summary(
            figures["records"],
            figures["ddls"],
            figures["first_ts"],
            figures["last_ts"],
            figures["hist"],
        )
        summary.update(stream=self.stream, bytes=figures["bytes"])
        with open(summary_path(self.bench, self.stream), "w") as fh:
            json.dump(
                {
                    **summary,
                    "first_ts": figures["first_ts"],
                    "last_ts": figures["last_ts"],
                    "hist": figures["hist"].to_wire(),
                },
                fh,
            )
        self.inp.ack_eos()
        self._final = {**self.state.to_wire(), "done": True, "summary": summary}
        self.checkpoint(self.guard(lambda: self._done(summary)))

    def _done(self, summary: dict[str, Any]) -> None:
        self.mark_done()
        self.finish(summary)
