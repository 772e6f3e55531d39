"""All or nothing: a streaming job larger than the free slots starts no task, says
why, and starts whole when an executor joins; ``placement-timeout`` fails it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from zdf import protocol as P
from zdf.errors import JobError
from zdf.jobs.benchrun import assert_exact, start_bench
from zdf.localcluster import LocalCluster, wait_until

# 4 streams = 4 slots (a stream's stages, its producers and the coordinator share one).
WIDE_JOB = {"servers": 4, "table-num": 6, "rcd-cnt": 3000, "rate": 0, "batch-size": 500}


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.cluster(executors=2, slots=1)
def test_a_job_larger_than_the_cluster_waits_with_its_reason_then_starts_whole(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"), **WIDE_JOB)
    job = wait_until(lambda: (j := run.status())["reason"] and j, 5, "a reason to wait")
    assert job["state"] == "pending"
    assert job["reason"] == "needs 4 slots, 2 free on 2 executors"
    assert job["slots"] == 4
    assert all(t["state"] == "pending" and t["executor"] is None for t in job["tasks"])

    out = zdf_cli("job", "status", run.job_id, "--master-addr", cluster.master_addr)
    assert "waiting: needs 4 slots, 2 free on 2 executors" in out.stdout, out

    cluster.start_executor()
    three = "needs 4 slots, 3 free on 3 executors"
    job = wait_until(lambda: (j := run.status())["reason"] == three and j, 10, three)
    assert all(t["attempt"] == 0 for t in job["tasks"]), "no partial start"
    cluster.start_executor()
    job = run.wait_end()
    assert_exact(run, job)
    assert job["reason"] is None
    assert {t["attempt"] for t in job["tasks"]} == {1}, "every task started once"
    on = {t["executor"] for t in job["tasks"]}
    assert len(on) == 4, on


@pytest.mark.cluster(executors=1, slots=2)
def test_submit_job_says_at_once_and_placement_timeout_fails_the_job(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    path = tmp_path / "wide.toml"
    path.write_text(
        'flow-id = "wide"\ntable-num = 3\nservers = 3\nrcd-cnt = 100\n'
        f'sink-dir = "{tmp_path / "sink"}"\nplacement-timeout = "1s"\n'
    )
    args = ("submit-job", "--master-addr", cluster.master_addr, "--config", str(path))
    out = zdf_cli(*args, "--format", "json")
    answer = json.loads(out.stdout)
    assert answer["reason"] == "needs 3 slots, 2 free on 1 executor", out

    out = zdf_cli(*args, "--wait")
    assert out.returncode == 1
    assert "pending: needs 3 slots, 2 free on 1 executor" in out.stderr, out.stderr
    assert "not placed within 1s: needs 3 slots, 2 free on 1 executor" in out.stdout, out.stdout


# A worker process lets its tasks use 200 descriptors: a binlog of 100 tables needs
# 3 x 102, one of 60 tables 3 x 62 (zdf.jobs.cost).
@pytest.mark.cluster(executors=2, workers=2, extra_env={"ZDF_WORKER_SOCKETS": "200"})
def test_a_task_over_the_socket_limit_is_refused_cleanly(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    client = cluster.client()
    with pytest.raises(JobError, match="task binlog-0 needs about 306 file descriptors"):
        start_bench(cluster, str(tmp_path / "a"), **{"table-num": 100, "servers": 2})
    assert client.call(P.JOB_LIST) == [], "nothing of a refused job is kept"

    workers = {p.pid for c in cluster.executors for p in psutil.Process(c.pid).children()}
    run = start_bench(cluster, str(tmp_path / "b"), **{"table-num": 60, "servers": 2})
    job = run.wait_end(60)
    assert job["state"] == "failed"
    assert "file descriptors and its worker processes have at most" in job["error"], job
    started = [t for t in job["tasks"] if t["kind"] == "binlog"]
    assert all(t["failures"] == 0 for t in started), "the big tasks were placed first"
    after = {p.pid for c in cluster.executors for p in psutil.Process(c.pid).children()}
    assert after == workers, "no worker process crashed"
    assert all(c.alive() for c in cluster.executors)

    small = start_bench(cluster, str(tmp_path / "c"), **{"table-num": 4, "servers": 2})
    assert_exact(small, small.wait_end(60))
