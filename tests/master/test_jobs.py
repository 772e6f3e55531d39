from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.jobs import JobManager
from zdf.master.states import JobState, TaskState


def spec(n: int = 3, retries: int = 1) -> JobSpec:
    tasks = [TaskSpec(f"t{i}", "function", "m:f", {"max_retries": retries}) for i in range(n)]
    return JobSpec("j", "function", tasks)


def test_job_runs_to_finished() -> None:
    jm = JobManager()
    job = jm.submit(spec())
    dispatches = jm.place_pending({"e1": 2, "e2": 2})
    assert len(dispatches) == 3 and {d.attempt for d in dispatches} == {1}
    for d in dispatches:
        jm.task_state(job.job_id, d.spec.task_id, 1, TaskState.RUNNING, executor_id=d.executor_id)
    assert job.state is JobState.RUNNING
    for d in dispatches:
        jm.task_state(job.job_id, d.spec.task_id, 1, TaskState.FINISHED, executor_id=d.executor_id)
    assert job.state is JobState.FINISHED
    assert job.finished_at is not None


def test_same_token_same_job() -> None:
    jm = JobManager()
    assert jm.submit(spec(), "tok").job_id == jm.submit(spec(), "tok").job_id
    assert len(jm.jobs) == 1


def test_capacity_short_tasks_stay_pending() -> None:
    jm = JobManager()
    job = jm.submit(spec(3))
    assert len(jm.place_pending({"e1": 1})) == 1
    assert job.counts()["pending"] == 2
    assert jm.place_pending({"e1": 1}) == [], "the slot is still in use"


def test_stale_attempt_is_ignored() -> None:
    jm = JobManager()
    job = jm.submit(spec(1))
    assert len(jm.place_pending({"e1": 1})) == 1
    jm.executor_lost("e1")
    (d2,) = jm.place_pending({"e2": 1})
    assert d2.attempt == 2
    jm.task_state(job.job_id, "t0", 1, TaskState.FINISHED, executor_id="e1")
    assert job.tasks["t0"].state is TaskState.SCHEDULED, "a zombie's report must not count"


def test_failure_retries_then_fails_the_job() -> None:
    jm = JobManager()
    job = jm.submit(spec(2, retries=1))
    for d in jm.place_pending({"e1": 4}):
        jm.task_state(job.job_id, d.spec.task_id, d.attempt, TaskState.RUNNING)
    jm.task_state(job.job_id, "t0", 1, TaskState.FAILED, {"error": "boom"})
    assert job.tasks["t0"].state is TaskState.PENDING
    (retry,) = jm.place_pending({"e1": 4})
    assert retry.attempt == 2
    cancels = jm.task_state(job.job_id, "t0", 2, TaskState.FAILED, {"error": "boom"})
    assert job.state is JobState.FAILED and "boom" in (job.error or "")
    assert cancels == [("e1", job.job_id, "t1")]
    assert job.tasks["t1"].state is TaskState.CANCELED


def test_cancel() -> None:
    jm = JobManager()
    job = jm.submit(spec(2))
    jm.place_pending({"e1": 1})
    cancels = jm.cancel(job.job_id)
    assert job.state is JobState.CANCELED and len(cancels) == 1
    assert all(t.state is TaskState.CANCELED for t in job.tasks.values())
    assert jm.place_pending({"e1": 5}) == []


def test_a_late_failure_does_not_rename_the_failed_job() -> None:
    """The job's error names the task shown failed, not a canceled one reporting late."""
    jm = JobManager()
    job = jm.submit(spec(2, retries=0))
    for d in jm.place_pending({"e1": 4}):
        jm.task_state(job.job_id, d.spec.task_id, d.attempt, TaskState.RUNNING)
    jm.task_state(job.job_id, "t0", 1, TaskState.FAILED, {"error": "first"})
    assert job.error == "task t0 failed: first"
    jm.task_state(job.job_id, "t1", 1, TaskState.FAILED, {"error": "late"})
    assert job.error == "task t0 failed: first"
    assert job.tasks["t0"].state is TaskState.FAILED
    assert job.tasks["t1"].state is TaskState.CANCELED
