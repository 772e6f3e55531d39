"""The benchmark job on a ``LocalCluster``, driven from outside: the fault tests and
the failover benchmarks submit it, wait for a share of the records to be written,
break something, wait for the tasks to move and the job to end, and check the
output with ``verify`` and the recovery with ``zdf.jobs.recovery``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from zdf import protocol as P
from zdf.cli.verify_sink import VerifyReport, verify
from zdf.jobs.bench import BenchConfig, build_bench_job, load_bench_config
from zdf.jobs.recovery import Recovery, measure_recovery, sink_times
from zdf.jobs.submit import submit_spec
from zdf.localcluster import Child, LocalCluster, wait_until

# 4 tables x 2 streams x 20,000 records, paced to last about 4 s: long enough to be
# killed mid-way, short enough for CI on 2 cores.
SMALL_FAULT_JOB: dict[str, Any] = {
    "flow-id": "fault",
    "table-num": 4,
    "servers": 2,
    "rcd-cnt": 20000,
    "ddl-freq": 1000,
    "batch-size": 500,
    "rate": 5000,
}

ACTIVE = ("scheduled", "running")


@dataclass
class BenchRun:
    cluster: LocalCluster
    config: BenchConfig
    job_id: str
    faults_ns: list[int] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.config.table_num * self.config.rcd_cnt

    def status(self) -> dict[str, Any]:
        return dict(self.cluster.client().call(P.JOB_STATUS, {"job_id": self.job_id}))

    def sunk(self) -> float:
        tasks = self.status()["tasks"]
        return sum(float(t["progress"].get("records", 0)) for t in tasks if t["kind"] == "sink")

    def wait_sunk(self, fraction: float, timeout: float = 30.0) -> None:
        """Wait until the sinks reported ``fraction`` of the records written."""
        wait_until(
            lambda: self.sunk() >= fraction * self.expected,
            timeout,
            f"{fraction:.0%} of the records written",
        )

    def busiest_executor(self) -> Child:
        load: dict[str, int] = {}
        for t in self.status()["tasks"]:
            if t["executor"] and t["state"] in ACTIVE:
                load[t["executor"]] = load.get(t["executor"], 0) + 1
        alive = [c for c in self.cluster.executors if c.alive()]
        return max(alive, key=lambda c: load.get(c.extra["id"], 0))

    def kill(self, child: Child, sig: int = 9) -> float:
        """Signal ``child``; the monotonic time of the signal."""
        self.faults_ns.append(time.time_ns())
        at = time.monotonic()
        self.cluster.kill(child, sig)
        return at

    def wait_moved(self, executor_id: str, timeout: float = 10.0) -> float:
        """Wait until no unfinished task is on ``executor_id`` and all run; when that was."""

        def moved() -> bool:
            tasks = self.status()["tasks"]
            elsewhere = [t["state"] == "running" and t["executor"] != executor_id for t in tasks]
            return all(t["state"] == "finished" or e for t, e in zip(tasks, elsewhere, strict=True))

        wait_until(moved, timeout, f"the tasks of {executor_id} to run elsewhere", interval=0.02)
        return time.monotonic()

    def wait_end(self, timeout: float = 90.0) -> dict[str, Any]:
        job = wait_until(
            lambda: (j := self.status())["state"] in ("finished", "failed", "canceled") and j,
            timeout,
            f"job {self.job_id} to end",
            interval=0.05,
        )
        return dict(job)

    def verify(self) -> VerifyReport:
        return verify(self.config)

    def recovery(self, fault: int = 0, since_ns: int | None = None) -> Recovery:
        times = sink_times(self.config_out_dir, self.config.streams)
        return measure_recovery(times, self.faults_ns[fault], since_ns=since_ns)

    @property
    def config_out_dir(self) -> str:
        return os.path.join(self.config.sink_dir, self.config.flow_id)


def start_bench(cluster: LocalCluster, sink_dir: str, **keys: Any) -> BenchRun:
    data = {**SMALL_FAULT_JOB, "sink-dir": sink_dir, **keys}
    spec = build_bench_job(data, "<test>")
    config = load_bench_config(data, "<test>")
    job_id = str(submit_spec(cluster.client(), spec)["job_id"])
    return BenchRun(cluster, config, job_id)


def assert_exact(run: BenchRun, job: dict[str, Any]) -> None:
    assert job["state"] == "finished", job.get("error")
    report = run.verify()
    assert report.ok, (report.counts, report.violations)
    assert report.records == run.expected
