"""Submissions in parts: each part checked as it comes, the job made at the commit."""

from __future__ import annotations

import pytest

from zdf.errors import JobError
from zdf.jobs.spec import TaskSpec
from zdf.master.staging import SubmissionStaging


def part(start: int, n: int) -> list[dict]:
    return [
        TaskSpec(f"t{i}", "function", "m:f", {"args": [i]}).to_dict()
        for i in range(start, start + n)
    ]


def test_parts_join_in_order_whatever_order_they_came() -> None:
    staging = SubmissionStaging()
    assert staging.add_part("tok", 1, part(3, 3)) == 3
    assert staging.add_part("tok", 0, part(0, 3)) == 6
    assert staging.add_part("tok", 0, part(0, 3)) == 6, "a part sent again counts once"
    staged = staging.take("tok")
    assert [t.task_id for t in staged.tasks(2)] == [f"t{i}" for i in range(6)]
    assert list(staged.task_records(2)) == [f"t{i}" for i in range(6)]
    assert all(r.job_id == staged.job_id for r in staged.task_records(2).values())
    with pytest.raises(JobError, match="no parts were staged"):
        staging.take("tok")


def test_a_missing_part_or_a_bad_one_refuses_the_submission() -> None:
    staging = SubmissionStaging()
    staging.add_part("tok", 0, part(0, 2))
    with pytest.raises(JobError, match="lacks parts"):
        staging.take("tok").tasks(2)
    staging.add_part("dup", 0, part(0, 2))
    with pytest.raises(JobError, match="unique"):
        staging.add_part("dup", 1, part(1, 2))
    with pytest.raises(JobError, match="no parts were staged"):
        staging.take("dup")
    with pytest.raises(JobError, match="operator must be module:name"):
        staging.add_part("bad", 0, [{"task_id": "x", "kind": "k", "operator": "nocolon"}])
