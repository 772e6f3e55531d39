"""Gang placement and slot sharing in the job manager (no sockets)."""

from __future__ import annotations

from zdf.jobs.bench import build_bench_job
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.jobs import JobManager
from zdf.master.states import JobState, TaskState


def bench(tables: int, streams: int, **keys: object) -> JobSpec:
    data = {"flow-id": "g", "table-num": tables, "servers": streams, **keys}
    return build_bench_job(data, "<test>")


def test_a_bench_job_takes_one_slot_per_stream_whatever_its_tables() -> None:
    assert bench(10, 3).slots_needed == 3
    assert bench(1000, 3).slots_needed == 3
    assert bench(100, 16).slots_needed == 16
    assert len(bench(100, 3).tasks) == 100 + 3 * 4 + 1


def test_a_job_larger_than_the_cluster_places_nothing_and_says_why() -> None:
    jm = JobManager()
    job = jm.submit(bench(100, 8))
    assert jm.place_pending({"e1": 3, "e2": 3}) == []
    assert job.state is JobState.PENDING
    assert job.reason == "needs 8 slots, 6 free on 2 executors"
    assert all(t.state is TaskState.PENDING for t in job.tasks.values())
    assert job.to_dict()["reason"] == job.reason


def test_it_starts_whole_when_an_executor_joins() -> None:
    jm = JobManager()
    job = jm.submit(bench(100, 8))
    jm.place_pending({"e1": 3, "e2": 3})
    dispatches = jm.place_pending({"e1": 3, "e2": 3, "e3": 3})
    assert len(dispatches) == len(job.tasks) and job.reason is None
    assert sum(jm.used_slots().values()) == 8
    by_slot: dict[str, set[str]] = {}
    for d in dispatches:
        by_slot.setdefault(d.spec.slot_key, set()).add(d.executor_id)
    assert all(len(executors) == 1 for executors in by_slot.values()), by_slot


def test_a_smaller_job_is_not_held_up_by_one_that_waits() -> None:
    jm = JobManager()
    big = jm.submit(bench(10, 8))
    small = jm.submit(bench(10, 2))
    placed = jm.place_pending({"e1": 2, "e2": 2})
    assert {d.job_id for d in placed} == {small.job_id}
    assert big.reason == "needs 8 slots, 4 free on 2 executors"


def test_after_an_executor_dies_only_its_slots_are_placed_again_all_or_none() -> None:
    jm = JobManager()
    job = jm.submit(bench(4, 2))
    first = jm.place_pending({"e1": 1, "e2": 1})
    assert {d.executor_id for d in first} == {"e1", "e2"}
    for d in first:
        jm.task_state(
            job.job_id, d.spec.task_id, d.attempt, TaskState.RUNNING, executor_id=d.executor_id
        )
    moved = jm.executor_lost("e2")
    assert moved and jm.place_pending({"e1": 1}) == []
    assert job.reason == "needs 1 slot, 0 free on 1 executor"
    again = jm.place_pending({"e1": 1, "e3": 1})
    assert {d.spec.task_id for d in again} == {t.task_id for t in moved}
    assert {d.executor_id for d in again} == {"e3"}


def test_placement_timeout_fails_the_job_with_its_reason() -> None:
    jm = JobManager()
    job = jm.submit(bench(10, 4, **{"placement-timeout": "2s"}))
    jm.place_pending({"e1": 1})
    assert job.waiting_since is not None
    assert jm.expired(job.waiting_since + 1.0) == []
    (late,) = jm.expired(job.waiting_since + 2.0)
    jm.fail_unplaced(late)
    assert job.state is JobState.FAILED
    assert job.error == "not placed within 2s: needs 4 slots, 1 free on 1 executor"
    assert jm.place_pending({"e1": 8}) == []


def test_function_tasks_each_take_a_slot_and_run_as_slots_free() -> None:
    jm = JobManager()
    tasks = [TaskSpec(f"t{i}", "function", "m:f") for i in range(5)]
    job = jm.submit(JobSpec("f", "function", tasks))
    first = jm.place_pending({"e1": 2})
    assert len(first) == 2 and job.reason is None
    jm.task_state(job.job_id, first[0].spec.task_id, 1, TaskState.FINISHED, executor_id="e1")
    assert len(jm.place_pending({"e1": 2})) == 1
