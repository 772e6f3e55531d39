"""Submitting a job from a client, in parts when it is large.

A job of up to ``PART_TASKS`` tasks is one ``submit_job`` message, as always. A
larger one sends its tasks first, ``PART_TASKS`` a message (``submit_part``), and
then the job without them (``submit_job`` with ``parts``): no message, and no
handler of the master, grows with the job (``zdf.master.staging``). Every
message carries the submission's token, so a retried message never makes a
second job.
"""

from __future__ import annotations

import uuid
from typing import Any

from zdf import protocol as P
from zdf.jobs.spec import JobSpec
from zdf.wire.rpc import RpcClient

PART_TASKS = 2000
SUBMIT_TIMEOUT = 60.0


def submit_spec(
    client: RpcClient, spec: JobSpec, token: str | None = None, timeout: float = SUBMIT_TIMEOUT
) -> dict[str, Any]:
    """Submit ``spec``; the master's answer: ``job_id``, ``state`` and ``reason``."""
    token = token or uuid.uuid4().hex
    if len(spec.tasks) <= PART_TASKS:
        return dict(
            client.call(P.SUBMIT_JOB, {"spec": spec.as_dict, "token": token}, timeout=timeout)
        )
    tasks = spec.as_dict["tasks"]
    parts = 0
    for start in range(0, len(tasks), PART_TASKS):
        part: dict[str, Any] = {
            "token": token,
            "index": parts,
            "tasks": tasks[start : start + PART_TASKS],
        }
        client.call(P.SUBMIT_PART, part, timeout=timeout)
        parts += 1
    body: dict[str, Any] = {"spec": spec.to_dict_header(), "token": token, "parts": parts}
    return dict(client.call(P.SUBMIT_JOB, body, timeout=timeout))
