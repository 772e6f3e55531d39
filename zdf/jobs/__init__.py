"""Job builders: a job file (TOML, as a dict) -> ``JobSpec``, by job type.

``JOB_TYPES`` maps a ``job-type`` to its builder ``(data, source) -> JobSpec``.
Other modules register theirs (``JOB_TYPES["function"] = build_function_job``);
this module imports only the bench builder, which imports nothing but
``zdf.config`` and ``zdf.jobs.spec``, so registering never cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zdf.errors import ConfigError
from zdf.jobs.bench import build_bench_job
from zdf.jobs.function import build_function_job
from zdf.jobs.spec import JobSpec, TaskSpec

JobBuilder = Callable[[dict[str, Any], str], JobSpec]


def build_dataflow_job(data: dict[str, Any], source: str) -> JobSpec:
    """``job-type = "dataflow"`` (``zdf.dataflow.graph``; imported on use: it loads operators)."""
    from zdf.dataflow.graph import build_dataflow_job as build

    return build(data, source)


JOB_TYPES: dict[str, JobBuilder] = {
    "bench": build_bench_job,
    "function": build_function_job,
    "dataflow": build_dataflow_job,
}


def job_type_of(data: dict[str, Any]) -> str | None:
    """The ``job-type`` key, or "bench" for a file with the original ``flow-id`` key."""
    job_type = data.get("job-type")
    if job_type is None and "flow-id" in data:
        return "bench"
    return None if job_type is None else str(job_type)


def build_job(data: dict[str, Any], source: str) -> JobSpec:
    """Expand a job file into a ``JobSpec``; ``ConfigError`` (one line) when it is bad."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a job file must be a table of keys")
    job_type = job_type_of(data)
    if job_type is None:
        allowed = ", ".join(sorted(JOB_TYPES))
        raise ConfigError(
            f"{source}: missing key 'job-type' (allowed: {allowed}; 'flow-id' implies bench)"
        )
    builder = JOB_TYPES.get(job_type)
    if builder is None:
        allowed = ", ".join(sorted(JOB_TYPES))
        raise ConfigError(f"{source}: key 'job-type': expected one of {allowed}, got {job_type!r}")
    return builder(data, source)


__all__ = ["JOB_TYPES", "JobBuilder", "JobSpec", "TaskSpec", "build_job", "job_type_of"]
