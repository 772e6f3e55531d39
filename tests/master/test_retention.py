"""Ended jobs are forgotten after job-retention; running ones never are."""

from __future__ import annotations

import time

from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.jobs import JobManager
from zdf.master.retention import JobRetention
from zdf.master.states import TaskState


def job(jm: JobManager, finish: bool) -> str:
    spec = JobSpec("j", "function", [TaskSpec("t0", "function", "m:f", {})])
    record = jm.submit(spec, token=f"tok-{len(jm.jobs)}")
    for d in jm.place_pending({"e1": 4}):
        jm.task_state(record.job_id, d.spec.task_id, d.attempt, TaskState.RUNNING)
        if finish:
            jm.task_state(record.job_id, d.spec.task_id, d.attempt, TaskState.FINISHED)
    return record.job_id


def test_sweep_forgets_only_jobs_ended_long_enough_ago() -> None:
    jm = JobManager()
    old, recent, running = job(jm, True), job(jm, True), job(jm, False)
    jm.jobs[old].finished_at = time.time() - 7200
    retention = JobRetention(jm, None, 3600, fenced=lambda write, *args: write(*args))
    assert retention.sweep() == [old]
    assert set(jm.jobs) == {recent, running}
    # A token of a forgotten job submits a new job, not the forgotten one.
    assert jm.submit(jm.jobs[recent].spec, "tok-0").job_id not in (old, recent, running)


def test_zero_retention_keeps_everything() -> None:
    jm = JobManager()
    ended = job(jm, True)
    jm.jobs[ended].finished_at = 0.0
    assert JobRetention(jm, None, 0, fenced=lambda write, *args: write(*args)).sweep() == []
    assert ended in jm.jobs
