"""Jobs from Python: ``Client.submit_job(flow)``, ``job_status`` and ``wait_job``.

A job is given as a ``zdf.dataflow.Flow``, a ``JobSpec`` or a job file's table
(a dict, as ``tomllib`` reads it); it is validated and expanded here, on the
client, before anything is sent, so a bad graph is a ``ConfigError`` at once.
The calls are plain master RPCs (``zdf.protocol``) on a short-lived
``RpcClient``; the submission carries a token so that a retried submit after a
lost answer does not start the job twice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from zdf import protocol as P
from zdf.errors import Timeout
from zdf.jobs.spec import JobSpec
from zdf.wire.rpc import RpcClient

TERMINAL = ("finished", "failed", "canceled")
POLL_INTERVAL = 0.1


def as_job_spec(job: Any) -> JobSpec:
    """A ``JobSpec`` from a ``Flow``, a ``JobSpec`` or a job file's table."""
    if isinstance(job, JobSpec):
        return job
    if isinstance(job, dict):
        from zdf.jobs import build_job

        return build_job(job, "<job table>")
    to_job = getattr(job, "to_job", None)
    if callable(to_job):
        spec = to_job()
        if isinstance(spec, JobSpec):
            return spec
    raise TypeError(f"cannot submit {type(job).__name__}: expected a Flow, a JobSpec or a dict")


def submit_job(endpoints: list[str], job: Any, timeout: float) -> str:
    spec = as_job_spec(job)
    with RpcClient(endpoints, timeout=timeout) as rpc:
        result = rpc.call(P.SUBMIT_JOB, {"spec": spec.to_dict(), "token": uuid.uuid4().hex})
    return str(result["job_id"])


def job_status(endpoints: list[str], job_id: str, timeout: float) -> dict[str, Any]:
    with RpcClient(endpoints, timeout=timeout) as rpc:
        return dict(rpc.call(P.JOB_STATUS, {"job_id": job_id}))


def wait_job(
    endpoints: list[str], job_id: str, timeout: float, rpc_timeout: float
) -> dict[str, Any]:
    """Poll until the job ends; its final status (``Timeout`` after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    with RpcClient(endpoints, timeout=rpc_timeout) as rpc:
        while True:
            job = dict(rpc.call(P.JOB_STATUS, {"job_id": job_id}))
            if job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise Timeout(f"job {job_id} still {job['state']} after {timeout:.0f}s")
            time.sleep(POLL_INTERVAL)
