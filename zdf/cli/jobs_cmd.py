"""Client commands: ``submit-job``, ``job list|status|cancel`` and ``status``."""

from __future__ import annotations

import time
import uuid
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from zdf import protocol as P
from zdf.cli.common import (
    FORMAT_OPTION,
    MASTER_OPTION,
    TIMEOUT_OPTION,
    handle_errors,
    master_client,
    print_json,
    print_table,
)
from zdf.config import read_toml
from zdf.errors import Timeout
from zdf.jobs.spec import JobSpec
from zdf.jobs.submit import submit_spec
from zdf.observe.rates import RateMeter, records_done
from zdf.observe.timefmt import clock, duration, job_duration
from zdf.wire.rpc import RpcClient

TERMINAL = {"finished", "failed", "canceled"}
JOB_COLUMNS = [
    "id",
    "name",
    "type",
    "state",
    "tasks",
    "running",
    "finished",
    "submitted",
    "ended",
    "duration",
]
POLL_INTERVAL = 0.2


def load_job_file(path: str) -> JobSpec:
    from zdf.jobs import build_job

    return build_job(read_toml(path), path)


def submit(client: RpcClient, spec: JobSpec) -> dict[str, Any]:
    """Submit ``spec``: the master's answer, ``job_id`` and (when it cannot be placed
    yet) the ``reason`` it waits."""
    return submit_spec(client, spec, uuid.uuid4().hex)


def job_total(job: dict[str, Any]) -> float:
    """Records done so far, summed over the sinks' (or all tasks') progress counters."""
    return records_done(job.get("tasks", []))


def wait_for_job(
    client: RpcClient, job_id: str, timeout: float, show_progress: bool, expected: float = 0.0
) -> dict[str, Any]:
    """Poll the job until it ends (or the deadline passes), drawing a progress bar."""
    deadline = time.monotonic() + timeout
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    ) as progress:
        bar = progress.add_task(job_id, total=expected or 1, rate="")
        meter = RateMeter()  # over the last few seconds: a paced job's rate does not flicker
        said = None
        while True:
            job = client.call(P.JOB_STATUS, {"job_id": job_id})
            reason = job.get("reason")
            if reason and reason != said:
                console.print(f"{job_id} pending: {reason}")
            said = reason
            progress.update(bar, description=f"{job_id} (waiting)" if reason else job_id)
            now, done = time.monotonic(), job_total(job)
            rate = meter.add(now, done)
            tasks = job.get("tasks", [])
            if not expected:
                finished = sum(1 for t in tasks if t["state"] == "finished")
                progress.update(bar, total=len(tasks), completed=finished, rate=job["state"])
            else:
                progress.update(bar, completed=done, rate=f"{rate:,.0f} rec/s")
            if job["state"] in TERMINAL:
                return dict(job)
            if now > deadline:
                raise Timeout(f"job {job_id} still {job['state']} after {timeout:.0f}s")
            time.sleep(POLL_INTERVAL)


def print_job(job: dict[str, Any]) -> None:
    console = Console()
    elapsed = ""
    if job.get("finished_at") and job.get("submitted_at"):
        elapsed = f" in {job['finished_at'] - job['submitted_at']:.2f}s"
    elif job.get("submitted_at"):
        elapsed = f" for {duration(job_duration(job))} (since {clock(job['submitted_at'])})"
    console.print(f"job [bold]{job['id']}[/] ({job.get('name')}): [bold]{job['state']}[/]{elapsed}")
    if job.get("reason"):
        console.print(f"waiting: {job['reason']}")
    if job.get("error"):
        console.print(f"error: {job['error'].splitlines()[0]}")
    print_table(
        "tasks",
        ["id", "kind", "executor", "state", "attempt", "progress"],
        [
            [
                t["id"],
                t["kind"],
                t["executor"],
                t["state"],
                t["attempt"],
                ", ".join(f"{k}={v:,.0f}" for k, v in t.get("progress", {}).items()),
            ]
            for t in job.get("tasks", [])
        ],
        whole=("id",),
    )


@click.command("submit-job")
@MASTER_OPTION
@click.option("--config", "config_path", required=True, help="The job's TOML file.")
@click.option("--wait", is_flag=True, help="Wait for the job to end, with a progress bar.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@FORMAT_OPTION
@handle_errors
def submit_job(master_addr: str, config_path: str, wait: bool, timeout: float, fmt: str) -> None:
    """Submit a job described by a TOML file."""
    spec = load_job_file(config_path)
    with master_client(master_addr, 10.0) as client:
        answer = submit(client, spec)
        job_id = str(answer["job_id"])
        reason = answer.get("reason")
        if not wait:
            if fmt == "json":
                print_json({"job_id": job_id, **({"reason": reason} if reason else {})})
            else:
                click.echo(f"submitted {job_id} ({len(spec.tasks)} tasks)")
                if reason:
                    click.echo(f"pending: {reason}")
            return
        expected = float(spec.settings.get("expected_records", 0) or 0)
        try:
            job = wait_for_job(client, job_id, timeout, fmt != "json", expected)
        except KeyboardInterrupt:
            click.echo(
                f"\nstopped waiting; job {job_id} goes on running. To cancel it: "
                f"zdf job cancel {job_id} --master-addr {master_addr}",
                err=True,
            )
            raise SystemExit(130) from None
    if fmt == "json":
        print_json(job)
    else:
        print_job(job)
    if job["state"] != "finished":
        raise SystemExit(1)


@click.group("job")
def job_group() -> None:
    """Inspect and control jobs."""


@job_group.command("list")
@MASTER_OPTION
@TIMEOUT_OPTION
@FORMAT_OPTION
@handle_errors
def job_list(master_addr: str, rpc_timeout: float, fmt: str) -> None:
    """List the jobs the master knows."""
    with master_client(master_addr, rpc_timeout) as client:
        jobs = client.call(P.JOB_LIST)
    if fmt == "json":
        print_json(jobs)
        return
    print_table(
        "jobs",
        [*JOB_COLUMNS],
        [
            [
                *(j[k] for k in ("id", "name", "type", "state", "tasks", "running", "finished")),
                clock(j.get("submitted_at")),
                clock(j.get("finished_at")),
                duration(job_duration(j)),
            ]
            for j in jobs
        ],
        whole=("id",),
    )


@job_group.command("status")
@click.argument("job_id")
@MASTER_OPTION
@TIMEOUT_OPTION
@FORMAT_OPTION
@handle_errors
def job_status(job_id: str, master_addr: str, rpc_timeout: float, fmt: str) -> None:
    """Show one job and its tasks."""
    with master_client(master_addr, rpc_timeout) as client:
        job = client.call(P.JOB_STATUS, {"job_id": job_id})
    if fmt == "json":
        print_json(job)
    else:
        print_job(job)


@job_group.command("cancel")
@click.argument("job_id")
@MASTER_OPTION
@TIMEOUT_OPTION
@FORMAT_OPTION
@handle_errors
def job_cancel(job_id: str, master_addr: str, rpc_timeout: float, fmt: str) -> None:
    """Cancel a job: its running tasks are stopped."""
    with master_client(master_addr, rpc_timeout) as client:
        job = client.call(P.JOB_CANCEL, {"job_id": job_id})
    if fmt == "json":
        print_json(job)
    else:
        click.echo(f"{job['id']}: {job['state']}")


@job_group.command("delete")
@click.argument("job_ids", nargs=-1, required=True)
@MASTER_OPTION
@TIMEOUT_OPTION
@handle_errors
def job_delete(job_ids: tuple[str, ...], master_addr: str, rpc_timeout: float) -> None:
    """Forget ended jobs (their records too); a running job must be canceled first."""
    with master_client(master_addr, rpc_timeout) as client:
        for job_id in job_ids:
            client.call(P.JOB_DELETE, {"job_id": job_id})
            click.echo(f"{job_id}: deleted")


@click.command("status")
@MASTER_OPTION
@TIMEOUT_OPTION
@FORMAT_OPTION
@handle_errors
def cluster_status(master_addr: str, rpc_timeout: float, fmt: str) -> None:
    """A cluster overview: master, executors, slots and jobs."""
    with master_client(master_addr, rpc_timeout) as client:
        status = client.call(P.CLUSTER_STATUS)
        executors = client.call(P.EXECUTOR_LIST)
    status["executor_list"] = executors
    if fmt == "json":
        print_json(status)
        return
    console = Console()
    console.print(
        f"master [bold]{status['master']}[/] at {status['addr']} "
        f"({status.get('role', 'leader')}, epoch {status['epoch']}, "
        f"up {duration(status['uptime_s'])}); "
        f"{status.get('slots_used', 0)}/{status['slots']} slots in use on "
        f"{status['executors'].get('alive', 0)} live executors"
    )
    jobs = ", ".join(f"{n} {s}" for s, n in status["jobs"].items()) or "none"
    console.print(f"jobs: {jobs}")
    fn = status.get("functions") or {}
    console.print(
        f"function tasks: {fn.get('submitted', 0):,} submitted, {fn.get('completed', 0):,} "
        f"completed, {fn.get('failed', 0):,} failed, {fn.get('queued', 0):,} queued, "
        f"{fn.get('inflight', 0):,} running on {fn.get('workers', 0)} workers"
    )
    print_table(
        "executors",
        ["id", "addr", "state", "slots in use", "last seen (s)"],
        [
            [e["id"], e["addr"], e["state"], f"{e.get('used', 0)}/{e['slots']}", e["last_seen_s"]]
            for e in executors
        ],
        whole=("id",),
    )
