"""A 1,000-table job while both executors are frozen (SIGSTOP) longer than the
keepalive TTL, as it starts: both are declared dead, every task is placed again,
the executors come back and register again, and the job still ends, exact.

(A job of a bench round once did not end within 120 s after such a freeze on a
loaded machine; started messages then went one per task.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from zdf import protocol as P
from zdf.cli.verify_sink import verify
from zdf.jobs import build_job
from zdf.jobs.bench import load_bench_config
from zdf.jobs.submit import submit_spec
from zdf.localcluster import LocalCluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TABLES = 1000
RECORDS = 200  # per table: the test is about the tasks, not the data
FREEZE = 1.5  # seconds; the cluster's keepalive TTL is 1 s


@pytest.mark.cluster(executors=2, workers=2)
def test_a_big_job_survives_both_executors_frozen_as_it_starts(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    data = {
        "flow-id": "frozen",
        "table-num": TABLES,
        "servers": 3,
        "rcd-cnt": RECORDS,
        "ddl-freq": 100,
        "sink-dir": str(tmp_path / "sink"),
    }
    client = cluster.client()
    job_id = submit_spec(client, build_job(data, "<test>"))["job_id"]
    wait_until(
        lambda: next(j for j in client.call(P.JOB_LIST) if j["id"] == job_id)["running"] > 0,
        60,
        "the first tasks to run",
    )
    pids = [executor.pid for executor in cluster.executors]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE)  # the fault itself: both frozen this long
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    def ended() -> dict | None:
        row = next(j for j in client.call(P.JOB_LIST) if j["id"] == job_id)
        return row if row["state"] in ("finished", "failed", "canceled") else None

    row = wait_until(ended, 180, "the job to end after the freeze", interval=0.2)
    assert row["state"] == "finished", row
    tasks = client.call(P.JOB_STATUS, {"job_id": job_id})["tasks"]
    assert max(t["attempt"] for t in tasks) >= 2, "the freeze moved tasks (else it tested nothing)"
    report = verify(load_bench_config(data, "<test>"))
    assert report.ok and report.records == TABLES * RECORDS, report.violations
    assert cluster.masters[0].alive(), "the master kept its leadership"
