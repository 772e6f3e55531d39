"""How zdf's cost grows with the size of a job (2 executors x 2 worker processes).

The benchmark job at 10, 100 and 1,000 tables, the same 2,000,000 records in
all, with 3, 8 and 16 streams; and function jobs of 1,000, 10,000 and 100,000
tasks. For each run: submit -> every task running (from the master's clock: the
job's submission time and each task's first "running" report), records/s (or
tasks/s) from submission to the end, the master's CPU seconds (psutil), and the
metastore writes the job cost (its revision moves once per write), each also
per task. The baseline of every ratio is the 10-table, 3-stream job, measured in
the same run, interleaved with the others (rounds of every shape in turn).

The machine is shared and has two cores: figures are noisy. The runs assert
what must hold whatever the noise (exact output, the 100,000-task function job
ends with every result right and the master never lost its election) and report
the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from zdf import protocol as P
from zdf.cli.verify_sink import verify
from zdf.jobs import build_job
from zdf.jobs.bench import load_bench_config
from zdf.jobs.submit import submit_spec
from zdf.localcluster import LocalCluster, wait_until
from zdf.metastore.client import MetaClient

TOTAL_RECORDS = 2_000_000
TABLES = (10, 100, 1000)
STREAMS = (3, 8, 16)
ROUNDS = 2
FUNCTION_TASKS = (1_000, 10_000, 100_000)
STATUS_PAGE = 5_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        str(tmp_path_factory.mktemp("scale")), executors=2, workers=2, log_level="warning"
    )
    try:
        yield local.start()
    finally:
        local.stop()


class Meter:
    """The master's CPU seconds and the metastore's writes across a run."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.master = psutil.Process(cluster.masters[0].pid)
        self.meta = MetaClient(cluster.meta_addrs, timeout=10.0)

    def _sample(self) -> tuple[float, int]:
        cpu = self.master.cpu_times()
        return cpu.user + cpu.system, int(self.meta.status()["revision"])

    def __enter__(self) -> Meter:
        self.cpu0, self.rev0 = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        cpu1, rev1 = self._sample()
        self.cpu_s = cpu1 - self.cpu0
        self.writes = rev1 - self.rev0
        self.meta.close()


def run_bench_job(cluster: LocalCluster, sink: Path, tables: int, streams: int) -> dict[str, Any]:
    data = {
        "flow-id": f"scale-{tables}-{streams}",
        "table-num": tables,
        "servers": streams,
        "rcd-cnt": TOTAL_RECORDS // tables,
        "ddl-freq": 1000,
        "sink-dir": str(sink),
    }
    spec = build_job(data, "<bench>")
    client = cluster.client()
    with Meter(cluster) as meter:
        job_id = submit_spec(client, spec)["job_id"]
        job = wait_end(client, job_id, 120)
    assert job["state"] == "finished", job.get("error")
    report = verify(load_bench_config(data, "<bench>"))
    assert report.ok and report.records == TOTAL_RECORDS, (report.counts, report.violations)
    tasks = len(spec.tasks)
    elapsed = job["finished_at"] - job["submitted_at"]
    return {
        "tasks": tasks,
        "all_running_ms": round(
            1e3 * (max(t["started_at"] for t in job["tasks"]) - job["submitted_at"]), 1
        ),
        "records_per_s": round(TOTAL_RECORDS / elapsed),
        "master_cpu_s": round(meter.cpu_s, 3),
        "master_cpu_ms_per_task": round(1e3 * meter.cpu_s / tasks, 3),
        "meta_writes": meter.writes,
        "meta_writes_per_task": round(meter.writes / tasks, 3),
    }


def wait_end(client: Any, job_id: str, timeout: float) -> dict[str, Any]:
    def ended() -> bool:
        row = next(j for j in client.call(P.JOB_LIST) if j["id"] == job_id)
        return row["state"] in ("finished", "failed", "canceled")

    wait_until(ended, timeout, f"job {job_id} to end", interval=0.05)
    return job_status(client, job_id)


def job_status(client: Any, job_id: str) -> dict[str, Any]:
    """The job with all its tasks, read a page at a time (``STATUS_PAGE`` tasks)."""
    query = {"job_id": job_id, "offset": 0, "limit": STATUS_PAGE}
    job = dict(client.call(P.JOB_STATUS, query))
    while len(job["tasks"]) < job["task_count"]:
        page = client.call(P.JOB_STATUS, {**query, "offset": len(job["tasks"])})
        job["tasks"] += page["tasks"]
    return job


def test_bench_job_at_scale(cluster: LocalCluster, tmp_path: Path, benchmark) -> None:
    shapes = [(t, 3) for t in TABLES] + [(100, s) for s in STREAMS if s != 3]
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):  # interleaved: every shape once a round
        for tables, streams in shapes:
            figures = run_bench_job(cluster, tmp_path / "sink", tables, streams)
            runs.setdefault(f"{tables}x{streams}", []).append(figures)
    rows = {name: median_row(r) for name, r in runs.items()}
    base = rows["10x3"]
    for row in rows.values():
        row["rate_vs_10x3"] = round(row["records_per_s"] / base["records_per_s"], 2)
        row["cpu_per_task_vs_10x3"] = round(
            row["master_cpu_ms_per_task"] / base["master_cpu_ms_per_task"], 2
        )
        row["writes_per_task_vs_10x3"] = round(
            row["meta_writes_per_task"] / base["meta_writes_per_task"], 2
        )
    benchmark.extra_info.update(rows)
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nbenchmark job at scale (medians of", ROUNDS, "interleaved rounds):")
    for name, row in rows.items():
        print(f"  {name}: {row}")


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


@pytest.mark.parametrize("tasks", FUNCTION_TASKS)
def test_function_job_at_scale(cluster: LocalCluster, benchmark, tasks: int) -> None:
    data = {
        "job-type": "function",
        "name": f"squares-{tasks}",
        "function": "zdf.jobs.examples:square",
        "tasks": tasks,
        "args": ["{i}"],
    }
    spec = build_job(data, "<bench>")
    client = cluster.client()
    master = cluster.masters[0]
    epoch = client.call(P.CLUSTER_STATUS)["epoch"]
    with Meter(cluster) as meter:
        t0 = time.monotonic()
        job_id = submit_spec(client, spec)["job_id"]
        submit_s = time.monotonic() - t0
        job = wait_end(client, job_id, 900)
    assert job["state"] == "finished", job.get("error")
    results = {t["id"]: t["info"].get("result") for t in job["tasks"]}
    assert results == {f"call-{i}": i * i for i in range(tasks)}, "every result, exactly"
    # A master that loses its lease steps down and exits (fail-stop): the same one
    # still serving, at the same epoch, is an election that never lapsed.
    assert master.alive() and client.call(P.CLUSTER_STATUS)["epoch"] == epoch, (
        "the master's election never lapsed"
    )
    elapsed = job["finished_at"] - job["submitted_at"]
    figures = {
        "tasks": tasks,
        "submit_s": round(submit_s, 3),
        "tasks_per_s": round(tasks / elapsed),
        "master_cpu_s": round(meter.cpu_s, 2),
        "master_cpu_ms_per_task": round(1e3 * meter.cpu_s / tasks, 3),
        "meta_writes": meter.writes,
        "meta_writes_per_task": round(meter.writes / tasks, 3),
    }
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nfunction job of {tasks} tasks:", figures)
