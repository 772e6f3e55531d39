"""``zdf logs JOB [TASK] [--attempt N] [--follow]``: what a job's tasks printed.

The master gathers the files from the executors (``task_logs``); this prints
each attempt's output under a header naming the task, attempt and executor
(only the bytes when one file is asked for), and with ``--follow`` asks again
every half second from where it got to, until the job ends (or Ctrl-C).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from zdf import protocol as P
from zdf.cli.common import MASTER_OPTION, TIMEOUT_OPTION, handle_errors, master_client
from zdf.errors import JobError

FOLLOW_INTERVAL = 0.5
TERMINAL = {"finished", "failed", "canceled"}


@click.command("logs")
@click.argument("job_id")
@click.argument("task_id", required=False)
@click.option("--attempt", type=int, default=None, help="Only this attempt (default: all).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@MASTER_OPTION
@TIMEOUT_OPTION
@handle_errors
def logs_cmd(
    job_id: str,
    task_id: str | None,
    attempt: int | None,
    follow: bool,
    master_addr: str,
    rpc_timeout: float,
) -> None:
    """Print what a job's tasks wrote to stdout and stderr (kept per attempt)."""
    offsets: dict[str, int] = {}
    shown: str | None = None
    with master_client(master_addr, rpc_timeout) as client:
        client.call(P.JOB_STATUS, {"job_id": job_id})  # an unknown job is an error
        while True:
            answer = client.call(
                P.TASK_LOGS,
                {
                    "job_id": job_id,
                    "task_id": task_id,
                    "attempt": attempt,
                    "offsets": offsets,
                },
            )
            shown = _print(answer, offsets, shown, headers=task_id is None or attempt is None)
            more = any(f["offset"] + len(f["data"]) < f["size"] for f in answer["files"])
            if more:
                continue  # the rest of a large file first
            if not follow:
                break
            state = client.call(P.JOB_STATUS, {"job_id": job_id})["state"]
            if state in TERMINAL:
                follow = False  # one more round for what came last
                continue
            time.sleep(FOLLOW_INTERVAL)
    if not offsets and shown is None:
        _no_output(job_id, task_id, attempt)


def _print(
    answer: dict[str, Any], offsets: dict[str, int], shown: str | None, headers: bool
) -> str | None:
    out = sys.stdout.buffer
    for entry in answer["files"]:
        data: bytes = entry["data"]
        key = f"{entry['executor']}:{entry['key']}"
        offsets[entry["key"]] = entry["offset"] + len(data)
        if not data:
            continue
        if headers and shown != key:
            click.echo(
                f"==> {entry['task']} attempt {entry['attempt']} on {entry['executor']} <==",
                err=False,
            )
        shown = key
        out.write(data)
        out.flush()
    if answer.get("missing"):
        missing = ", ".join(answer["missing"])
        click.echo(f"(executors that did not answer: {missing})", err=True)
    return shown


def _no_output(job_id: str, task_id: str | None, attempt: int | None) -> None:
    what = job_id if task_id is None else f"{job_id}/{task_id}"
    if attempt is not None:
        what += f" attempt {attempt}"
    raise JobError(
        f"no output kept for {what} on the live executors "
        "(nothing printed, or its executor is gone)"
    )
