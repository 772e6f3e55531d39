"""The multi-process job runner the dataflow benchmark uses."""

from __future__ import annotations

import pytest

from zdf.errors import JobError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime.multiproc import MultiProcessRunner, deal

pytestmark = pytest.mark.timeout(60)


def test_a_child_that_dies_fails_the_run_at_once() -> None:
    job = JobSpec(
        "dies", "dataflow", [TaskSpec("t0", "operator", "tests.runtime.helpers:ExitAtOpen")]
    )
    with (
        MultiProcessRunner(job) as runner,
        pytest.raises(JobError, match="t0 failed: its process exited with code 3"),
    ):
        runner.run(timeout=50)  # without the check: a Timeout after 50 s


def test_deal_keeps_a_group_in_one_process_and_spreads_the_rest() -> None:
    def spec(task_id: str, group: str = "") -> TaskSpec:
        return TaskSpec(task_id, "k", "m:C", {}, group)

    tasks = [spec(f"p{i}") for i in range(4)]
    tasks += [spec(f"{stage}{s}", f"stream-{s}") for stage in ("b", "r", "s") for s in range(3)]
    groups = deal(tasks, 2)
    where = {t.task_id: i for i, g in enumerate(groups) for t in g}
    for s in range(3):
        assert where[f"b{s}"] == where[f"r{s}"] == where[f"s{s}"]
    assert [where[f"p{i}"] for i in range(4)] == [0, 1, 0, 1]  # round-robin when even
    assert sorted(len(g) for g in groups) == [5, 8]
    assert deal([spec("a"), spec("b"), spec("c")], 3) == [[spec("a")], [spec("b")], [spec("c")]]
    assert deal([spec("a", "g"), spec("b", "g")], 2) == [[spec("a", "g"), spec("b", "g")]]
