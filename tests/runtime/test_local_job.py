"""Whole bench jobs in the in-process runner, checked by verify()."""

from __future__ import annotations

import json
import os
import time

import pytest

from zdf.cli.verify_sink import verify
from zdf.errors import JobError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime import launch
from zdf.runtime.bench.stages import Producer
from zdf.runtime.local import LocalRunner

from .conftest import JobFactory, replace_flow_params
from .helpers import Collector, Doubler, FakeContext

pytestmark = pytest.mark.timeout(60)


def test_small_job_output_is_exact(small_job: JobFactory, no_leaks: None) -> None:
    job, config = small_job()
    with LocalRunner(job) as runner:
        results = runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations
    assert report.records == 3 * 2000 and report.ddls == 3 * 10
    summary = results["coordinator"]
    assert summary["records"] == 6000 and summary["ddls"] == 30 and summary["barriers"] == 30
    out = os.path.join(config.sink_dir, config.flow_id)
    with open(os.path.join(out, "summary.json")) as fh:
        on_disk = json.load(fh)
    for key in (
        "records",
        "ddls",
        "elapsed_s",
        "records_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
    ):
        assert key in on_disk
    assert on_disk["records"] == 6000
    assert sum(results[f"sink-{s}"]["records"] for s in range(2)) == 6000
    assert os.path.exists(os.path.join(out, "summary_1.json"))


@pytest.mark.parametrize(
    "keys",
    [
        {"servers": 1},
        {"servers": 4, "table-num": 5, "batch-size": 100},
        {"ddl-freq": 1},  # a DDL before every record
        {"ddl-freq": 5000},  # no DDL at all
        {"rcd-cnt": 1999, "ddl-freq": 7, "batch-size": 33},
    ],
)
def test_job_shapes(small_job: JobFactory, keys: dict[str, int]) -> None:
    job, config = small_job(**keys)
    with LocalRunner(job, use_ipc=False) as runner:
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations


def test_rate_limited_producers(small_job: JobFactory) -> None:
    job, config = small_job(**{"rcd-cnt": 2000, "rate": 20000})
    with LocalRunner(job) as runner:
        summary = runner.run(timeout=30)["coordinator"]
    assert verify(config).ok
    assert summary["elapsed_s"] >= 0.05  # 8 batches of 256 paced at 20000/s: 90 ms


def test_a_user_operator_in_a_job(classic_job: JobFactory) -> None:
    """Operators are referenced by import path; StreamOperator needs only process()."""
    bench, _ = classic_job(**{"servers": 1, "table-num": 1})
    # Without done-after, the bench stages finish when their end of stream is acknowledged.
    keep = [
        TaskSpec(
            t.task_id, t.kind, t.operator, {k: v for k, v in t.params.items() if k != "done-after"}
        )
        for t in bench.tasks
        if t.kind in ("producer", "binlog")
    ]
    module = Doubler.__module__
    tasks = [
        *keep,
        TaskSpec(
            "double", "map", f"{module}:Doubler", {"input": {"task": "binlog-0", "port": "stream"}}
        ),
        TaskSpec("collect", "sink", f"{module}:Collector", {"input": {"task": "double"}}),
    ]
    with LocalRunner(JobSpec("user", "custom", tasks)) as runner:
        results = runner.run(timeout=30)
        collector = runner.handles["collect"].operator
        assert isinstance(collector, Collector)
        pks = sorted(
            int(pk)
            for rows in collector.rows
            for pk, tp in zip(rows["pk"], rows["tp"], strict=True)
            if tp == 0
        )
    assert pks == [2 * k for k in range(1, 2001)]
    assert results["double"]["records"] == results["collect"]["records"]


def test_launch_rejects_bad_operators(no_leaks: None) -> None:
    ctx = FakeContext("x", {})
    for path, message in [
        ("nosuch.module:Op", "cannot import"),
        ("zdf.runtime:Nope", "has no"),
        ("zdf.runtime.pipe:InPort", "not a zdf.runtime.Operator"),
    ]:
        with pytest.raises(JobError, match=message):
            launch(ctx, TaskSpec("x", "k", path))
    with pytest.raises(JobError, match="failed to open"):
        launch(ctx, TaskSpec("x", "k", f"{Doubler.__module__}:Doubler"))  # no "input" param


def test_cancel_closes_every_socket(small_job: JobFactory, no_leaks: None) -> None:
    job, _ = small_job()
    runner = LocalRunner(job)
    runner.start()
    for _ in range(5):  # a few turns: endpoints resolved, sockets connected, data flowing
        runner.reactor.run_once(0.01)
    ops = [h.operator for h in runner.handles.values()]
    runner.close()
    assert all(op.closed for op in ops)


def test_finished_tasks_hold_nothing_while_their_host_lives_on(
    small_job: JobFactory, no_leaks: None
) -> None:
    """Each task releases its sockets, timers and files once it reported finished, not
    when its host closes: the same job run again meanwhile finds its sink files free."""
    import zmq

    def open_sockets() -> int:
        return sum(not s.closed for s in getattr(zmq.Context.instance(), "_sockets", ()))

    job, config = small_job()
    before = open_sockets()
    with LocalRunner(job) as first:
        first.run(timeout=30)
        assert [t for t, h in first.handles.items() if not h.operator.closed] == []
        assert [t for t, h in first.handles.items() if h.operator._timers] == []
        assert open_sockets() == before
        with LocalRunner(job) as again:  # same flow-id: the same sink files
            again.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations
    assert report.records == 3 * 2000


def test_a_failing_operator_fails_the_job(small_job: JobFactory) -> None:
    job, _ = small_job()
    job = replace_flow_params(job, "syncer-0", tables=1)
    with (
        LocalRunner(job) as runner,
        pytest.raises(JobError, match=r"syncer-0.*table id out of range"),
    ):
        runner.run(timeout=30)


def test_paced_producers_share_one_schedule(small_job: JobFactory) -> None:
    """The binlogs merge in rounds: producers paced apart would only wait for each other."""
    job, config = small_job(rate=20000)
    with LocalRunner(job) as runner:
        runner.start()
        producers = [runner.handles[f"producer-{t}"].operator for t in range(config.table_num)]
        assert all(isinstance(p, Producer) for p in producers)

        def paced() -> bool:
            return all(getattr(p, "t0", None) is not None for p in producers)

        runner.reactor.run(until=paced, deadline=time.monotonic() + 10)
        assert paced()
        assert len({getattr(p, "t0", None) for p in producers}) == 1
        runner.restart(["producer-1"])  # a restarted producer keeps the schedule it had
        restarted = runner.handles["producer-1"].operator
        assert isinstance(restarted, Producer) and restarted.t0 == producers[0].t0
        runner.run(timeout=30)
    assert verify(config).ok
