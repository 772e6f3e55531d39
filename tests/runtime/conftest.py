"""Helpers for runtime tests: small bench jobs written under pytest's tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zdf.jobs.bench import BenchConfig, build_bench_job, load_bench_config
from zdf.jobs.spec import JobSpec, TaskSpec

SMALL: dict[str, Any] = {
    "flow-id": "t",
    "table-num": 3,
    "servers": 2,
    "rcd-cnt": 2000,
    "ddl-freq": 200,
    "batch-size": 256,
}

JobFactory = Callable[..., tuple[JobSpec, BenchConfig]]


@pytest.fixture
def small_job(tmp_path: Path) -> JobFactory:
    """``small_job(**keys)`` -> (job spec, config) of a small bench job in tmp_path."""

    def make(**overrides: Any) -> tuple[JobSpec, BenchConfig]:
        data = {**SMALL, "sink-dir": str(tmp_path / "out"), **overrides}
        return build_bench_job(data, "test.toml"), load_bench_config(data, "test.toml")

    return make


@pytest.fixture
def classic_job(tmp_path: Path) -> JobFactory:
    """``small_job`` built from the first, hand-wired bench operators (``engine="classic"``):
    for the tests that reach into those operators."""

    def make(**overrides: Any) -> tuple[JobSpec, BenchConfig]:
        data = {**SMALL, "sink-dir": str(tmp_path / "out"), **overrides}
        spec = build_bench_job(data, "test.toml", engine="classic")
        return spec, load_bench_config(data, "test.toml")

    return make


def replace_operator(job: JobSpec, task_id: str, operator: str, **params: Any) -> JobSpec:
    """The same job with one task running another operator (e.g. a slowed-down one)."""
    tasks = [
        TaskSpec(t.task_id, t.kind, operator, {**t.params, **params}) if t.task_id == task_id else t
        for t in job.tasks
    ]
    return JobSpec(job.name, job.job_type, tasks, job.settings)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if a test leaves zmq sockets open in the process-wide context."""
    import zmq

    ctx = zmq.Context.instance()
    before = len(getattr(ctx, "_sockets", ()))
    yield
    import gc

    gc.collect()
    open_ = [s for s in getattr(ctx, "_sockets", ()) if not s.closed]
    assert len(open_) <= before, f"{len(open_) - before} zmq sockets left open"


def replace_flow_params(job: JobSpec, task_id: str, **params: Any) -> JobSpec:
    """The same job with the operator params of one dataflow task changed."""

    def changed(t: TaskSpec) -> TaskSpec:
        flow = {**t.params["flow"], "params": {**t.params["flow"]["params"], **params}}
        return TaskSpec(t.task_id, t.kind, t.operator, {**t.params, "flow": flow}, t.group, t.slot)

    tasks = [changed(t) if t.task_id == task_id else t for t in job.tasks]
    return JobSpec(job.name, job.job_type, tasks, job.settings)
