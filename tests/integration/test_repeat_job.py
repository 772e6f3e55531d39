"""The same job submitted again on the same cluster: a finished job leaves nothing
behind that the next one trips over (sockets, timers, the sinks' file locks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zdf.jobs.benchrun import assert_exact, start_bench
from zdf.localcluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

JOB_BOUND = 30.0
"""Seconds each run may take (the job itself takes about one on an idle machine)."""


def test_the_same_bench_job_twice_in_a_row(cluster: LocalCluster, tmp_path: Path) -> None:
    """Same flow-id, so the second run writes the very files the first one wrote."""
    sink_dir = str(tmp_path / "sink")
    for _ in range(2):
        run = start_bench(cluster, sink_dir, **{"rcd-cnt": 5000, "rate": 10000})
        job = run.wait_end(timeout=JOB_BOUND)
        assert_exact(run, job)
