"""``coordinator``: the job's one summary, from the sinks' reports.

The DDL barrier needs no coordinator: the sinks settle it among themselves
(``zdf.runtime.bench.barrier``). What is left for one task of the job is the
job-wide figures: when every sink has raised its done flag, the coordinator
merges their ``summary_<s>.json`` (sums, and the latency histograms) into
``<sink-dir>/<flow-id>/summary.json`` and finishes with it as its summary.

Failover: it keeps nothing; a restarted coordinator watches the same done flags
(durable in the endpoint directory) and reads the same files.
"""

from __future__ import annotations

import functools
import json
import os

from zdf.files import write_file
from zdf.runtime.bench.latency import LatencyHistogram
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkcore import sink_summary, summary_path
from zdf.runtime.operator import DONE, Operator


class Coordinator(Operator):
    """params: the bench params."""

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.expected = p.tables * p.versions
        self.sinks_done: set[int] = set()
        for s in range(p.streams):
            on_done = self.guard(functools.partial(self._sink_done, s))
            self.ctx.resolve_endpoint(f"sink-{s}", DONE, on_done)

    def _sink_done(self, stream: int, _flag: str = "") -> None:
        self.sinks_done.add(stream)
        self.progress(sinks_done=float(len(self.sinks_done)))
        if len(self.sinks_done) == self.bench.streams and not self.done:
            self._finish_job()

    def _finish_job(self) -> None:
        p = self.bench
        reports = []
        for s in range(p.streams):
            with open(summary_path(p, s)) as fh:
                reports.append(json.load(fh))
        ddls = sum(int(r.get("ddls", 0)) for r in reports)
        if ddls != self.expected:
            self.fail(f"all sinks done but {ddls}/{self.expected} DDLs written")
            return
        hist = LatencyHistogram()
        for report in reports:
            hist.merge(LatencyHistogram.from_wire(report.get("hist")))
        firsts = [int(r["first_ts"]) for r in reports if r.get("first_ts")]
        summary = sink_summary(
            sum(int(r.get("records", 0)) for r in reports),
            ddls,
            min(firsts) if firsts else 0,
            max(int(r.get("last_ts", 0)) for r in reports),
            hist,
        )
        summary["flow_id"] = p.flow_id
        summary["streams"] = p.streams
        summary["tables"] = p.tables
        summary["barriers"] = ddls
        os.makedirs(p.out_dir, mode=0o700, exist_ok=True)
        write_file(os.path.join(p.out_dir, "summary.json"), json.dumps(summary, indent=2))
        self.finish(summary)
