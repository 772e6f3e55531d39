"""The multi-process job runner the dataflow benchmark uses."""

from __future__ import annotations

import pytest

from zdf.errors import JobError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime.multiproc import MultiProcessRunner

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
