"""``sink-<s>``: writes stream ``s`` to ``<sink-dir>/<flow-id>/sink_<s>.bin``.

Each batch becomes ``SINK_DTYPE`` rows (the record's bytes plus ``sink_ts``, the
write time in ns, strictly increasing per file) written with one ``write``.
Barrier side: the DDLs in a batch are not written with it; after the batch's
data is written the sink tells the coordinator they *arrived* (so "arrived"
means "everything before it in this stream is written"). The sink chosen by
``BenchParams.writer`` keeps its copy of the DDL row and writes it when the
coordinator says ``write``, then answers ``written``.

At the end of its input (and once it owes no DDL) the sink closes the file,
writes ``summary_<s>.json`` and sends its figures to the coordinator, which
writes the job's ``summary.json``. Its position for a restart is the file length.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from zdf.errors import ZdfError
from zdf.records import DDL, RECORD_DTYPE, SINK_DTYPE
from zdf.runtime.batches import concat_rows
from zdf.runtime.bench.latency import LatencyHistogram
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.link import PeerLink
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import InPort
from zdf.wire.rpc import Call

DONE_RETRIES = 5
DONE_TIMEOUT = 5.0


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


class Sink(Operator):
    """params: bench params and ``stream``."""

    inp: InPort
    _committed = 0

    def restore(self, state: dict[str, Any]) -> None:
        self._committed = int(state.get("length", 0))

    def snapshot(self) -> dict[str, Any]:
        return {"length": self.length}

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        self.path = p.sink_path(self.stream)
        os.makedirs(p.out_dir, exist_ok=True)
        mode = "r+b" if self._committed and os.path.exists(self.path) else "wb"
        self.file = open(self.path, mode, buffering=0)  # noqa: SIM115 (closed in close())
        self.file.truncate(self._committed)
        self.file.seek(self._committed)
        self.on_close(self.file.close)
        self.length = self._committed
        self.records = 0
        self.ddls = 0
        self.first_ts = 0
        self.last_ts = 0
        self.hist = LatencyHistogram()
        self.owed: dict[tuple[int, int], np.ndarray] = {}  # DDLs this sink must write
        self._input_ended = False
        self._finishing = False
        self._done_tries = 0
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
        )

    def _hello(self, link: PeerLink) -> None:
        link.notify("hello", {"role": "sink", "stream": self.stream})

    # -- writing -----------------------------------------------------------------
    def _write(self, rows: np.ndarray) -> None:
        n = len(rows)
        out = np.empty(n, SINK_DTYPE)
        out.view(np.uint8).reshape(n, SINK_DTYPE.itemsize)[:, : RECORD_DTYPE.itemsize] = (
            np.ascontiguousarray(rows).view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
        )
        now = max(time.time_ns(), self.last_ts + 1)
        out["sink_ts"] = now
        self.file.write(out.data)
        self.length += out.nbytes
        self.last_ts = now
        ts = rows["ts"]
        low = int(ts.min())
        self.first_ts = low if self.first_ts == 0 else min(self.first_ts, low)

    def _on_batch(self, rows: np.ndarray, pos: int, next_pos: int) -> None:
        is_ddl = rows["tp"] == DDL
        ddl = rows[is_ddl] if is_ddl.any() else rows[:0]
        data = rows[~is_ddl] if len(ddl) else rows
        if len(data):
            self._write(data)
            self.records += len(data)
            self.hist.add(self.last_ts - data["ts"])
        if len(ddl):
            pairs = []
            for i, (t, v) in enumerate(
                zip(ddl["tid"].tolist(), ddl["schema_ver"].tolist(), strict=True)
            ):
                pairs.append([t, v])
                if self.bench.writer(t, v) == self.stream:
                    self.owed[(t, v)] = ddl[i : i + 1].copy()
            self.coord.notify("arrive", {"stream": self.stream, "pairs": pairs})
        self.consumed()
        self.progress(records=float(self.records))

    def consumed(self) -> None:
        """The batch is written: give the syncer its credit back (tests slow this down)."""
        self.inp.ack()

    def _on_write(self, call: Call) -> None:
        pairs = call.body.get("pairs") if isinstance(call.body, dict) else None
        if not isinstance(pairs, list):
            raise ValueError("write without pairs")
        rows = []
        for t, v in pairs:
            row = self.owed.pop((t, v), None)
            if row is None:
                raise ZdfError(
                    f"sink {self.stream} was asked to write DDL ({t}, {v}) it does not hold"
                )
            rows.append(row)
        if rows:
            self._write(concat_rows(rows))
            self.ddls += len(rows)
        self.coord.notify("written", {"stream": self.stream, "pairs": pairs})
        self._maybe_finish()

    # -- the end -------------------------------------------------------------------
    def _on_eos(self, pos: int) -> None:
        self._input_ended = True
        self._maybe_finish()

    def summary(self) -> dict[str, Any]:
        out = sink_summary(self.records, self.ddls, self.first_ts, self.last_ts, self.hist)
        out["stream"] = self.stream
        out["bytes"] = self.length
        return out

    def _maybe_finish(self) -> None:
        if not self._input_ended or self.owed or self._finishing:
            return
        self._finishing = True
        self.file.close()
        path = os.path.join(self.bench.out_dir, f"summary_{self.stream}.json")
        with open(path, "w") as fh:
            json.dump(self.summary(), fh, indent=2)
        self.inp.ack_eos()
        self._report_done()

    def _report_done(self) -> None:
        stats = {
            "stream": self.stream,
            "records": self.records,
            "ddls": self.ddls,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "hist": self.hist.to_wire(),
        }
        self._done_tries += 1
        self.coord.request(
            "sink-done", stats, self.guard(self._on_done_reply), timeout=DONE_TIMEOUT
        )

    def _on_done_reply(self, result: Any, error: ZdfError | None) -> None:
        if self.closed:
            return
        if error is None:
            self.finish(self.summary())
        elif self._done_tries < DONE_RETRIES:
            self.call_later(0.1 * self._done_tries, self._report_done)
        else:
            self.fail(f"the coordinator did not take sink {self.stream}'s report: {error}")
