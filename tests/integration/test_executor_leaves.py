"""An executor stopped with SIGTERM deregisters: listed ``left`` (not ``dead``), its
tasks run elsewhere at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from zdf import protocol as P
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.mark.cluster(executors=2, workers=1, keepalive_ttl="5s", keepalive_interval="1s")
def test_sigterm_is_left_and_tasks_move_at_once(cluster: LocalCluster, tmp_path: Path) -> None:
    data = {"job-type": "function", "name": "hold", "function": "zdf.jobs.examples:hold"}
    spec = build_function_job({**data, "tasks": 1, "args": [300]}, "<test>").to_dict()
    job_id = cluster.client().call(P.SUBMIT_JOB, {"spec": spec})["job_id"]

    def placed() -> dict | None:
        task = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})["tasks"][0]
        return task if task["state"] == "running" else None

    task = wait_until(placed, 30, "the task running")
    victim = next(c for c in cluster.executors if c.extra["id"] == task["executor"])
    stopped = time.monotonic()
    cluster.kill(victim, signal.SIGTERM)

    def moved() -> dict | None:
        now = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})["tasks"][0]
        return now if now["attempt"] == 2 and now["state"] == "running" else None

    again = wait_until(moved, 10, "the task running elsewhere")
    took = time.monotonic() - stopped
    assert again["executor"] != task["executor"]
    # Silence would take keepalive-ttl (5 s here) to notice; leaving is told at once.
    assert took < 4, took
    assert cluster.executor_state(task["executor"]) == "left"
    victim.proc.wait(10)
    log = Path(cluster.masters[0].log_path).read_text()
    assert f"executor {task['executor']}: alive -> left" in log
    assert f"executor {task['executor']}: alive -> suspect" not in log
    assert f"{task['executor']}: suspect -> dead" not in log
    cluster.client().call(P.JOB_CANCEL, {"job_id": job_id})
