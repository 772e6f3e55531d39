"""Failover groundwork: the binlog stream is reproducible and can be read from any gtid."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime.batches import concat_rows
from zdf.runtime.local import LocalRunner

from .conftest import JobFactory
from .helpers import Collector

pytestmark = pytest.mark.timeout(60)


def read_stream(job: JobSpec, start_gtid: int) -> np.ndarray:
    """Producers + binlog-0, and a receive resumed at ``start_gtid`` feeding a collector."""
    keep = [t for t in job.tasks if t.kind == "producer" or t.task_id == "binlog-0"]
    receive = next(t for t in job.tasks if t.task_id == "receive-0")
    collect = TaskSpec(
        "collect",
        "sink",
        f"{Collector.__module__}:Collector",
        {"input": {"task": "receive-0", "from": start_gtid}},
    )
    with LocalRunner(JobSpec(job.name, "custom", [*keep, receive, collect])) as runner:
        runner.checkpoints["receive-0"] = {"gtid": start_gtid}
        runner.start()
        # Only stream 0 is read, so the producers never finish: wait for the collector.
        runner.reactor.run(
            until=lambda: "collect" in runner.finished, deadline=time.monotonic() + 30
        )
        assert "collect" in runner.finished, runner.failed
        collector = runner.handles["collect"].operator
        assert isinstance(collector, Collector)
        return concat_rows(collector.rows)


def test_receive_resumes_from_a_gtid_and_sees_the_same_stream(classic_job: JobFactory) -> None:
    job, _ = classic_job()
    full = read_stream(job, 0)
    assert (full["gtid"] == np.arange(len(full))).all()
    tail = read_stream(job, 1234)
    assert tail["gtid"][0] == 1234
    # Byte for byte the same records (except the produce time): the merge is deterministic.
    fields = ["tp", "schema_ver", "tid", "gtid", "pk"]
    for name in fields:
        assert (tail[name] == full[name][1234:]).all()
