"""``zdf demo``: a whole local cluster, one job, a report, and everything stopped.

Starts a metastore, a master and executors as child processes on free loopback
ports, submits a job (the benchmark job by default), shows its progress,
optionally kills an executor on the way to show failover, prints a report and
stops every process it started — on Ctrl-C too, and on SIGTERM or SIGHUP (a
``kill``, a closed terminal), which it takes as it takes Ctrl-C: left to their
default action they would end this process at once and leave the cluster running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import click
from rich.console import Console

from zdf import protocol as P
from zdf.cli.common import handle_errors, print_table
from zdf.cli.jobs_cmd import load_job_file, print_job, submit
from zdf.config import parse_duration
from zdf.errors import ConfigError, Timeout
from zdf.jobs.spec import JobSpec
from zdf.localcluster import LocalCluster

TERMINAL = {"finished", "failed", "canceled"}

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the demo as Ctrl-C does: the cluster is stopped, then it exits."""

Handler = Callable[[int, FrameType | None], Any] | int | None


class Stopped(KeyboardInterrupt):
    """A stop signal (``STOP_SIGNALS``) arrived; handled exactly as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    for other in STOP_SIGNALS:  # one is enough: a second must not cut the stop short
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


@contextmanager
def _signals(handler: Handler, signums: tuple[int, ...]) -> Iterator[None]:
    """``handler`` for ``signums`` inside the block; the previous handlers after it."""
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


FAULT_RATE = 20000
"""Records/s per producer when a fault is asked for: the job then lasts about 5 s, so a
kill after 2 s lands mid-job (unpaced, it is over in about a second)."""


def default_job(base_dir: str, paced: bool = False) -> tuple[JobSpec, dict[str, Any] | None]:
    """The benchmark job (10 tables, 3 streams) writing under the demo's directory."""
    from zdf.jobs import build_job

    data = {
        "flow-id": "demo",
        "table-num": 10,
        "servers": 3,
        "rcd-cnt": 100000,
        "ddl-freq": 1000,
        "sink-dir": os.path.join(base_dir, "sink"),
        "rate": FAULT_RATE if paced else 0,
    }
    return build_job(data, "<demo>"), data


@click.command("demo")
@click.option(
    "--config", "config_path", default=None, help="A job TOML (default: the benchmark job)."
)
@click.option("--executors", default=2, show_default=True, help="How many executors to start.")
@click.option("--workers", default=2, show_default=True, help="Worker processes per executor.")
@click.option(
    "--masters", default=None, type=int, help="Masters to start (default 1; 2 with a master kill)."
)
@click.option(
    "--kill-executor-after",
    default=None,
    help="Kill -9 the busiest executor this long after submission (e.g. 2s).",
)
@click.option(
    "--kill-master-after",
    default=None,
    help="Kill -9 the leading master this long after submission; a standby takes over.",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the job.")
@click.option("--keep", is_flag=True, help="Keep the demo's directory (logs, sink files).")
@handle_errors
def demo(
    config_path: str | None,
    executors: int,
    workers: int,
    masters: int | None,
    kill_executor_after: str | None,
    kill_master_after: str | None,
    timeout: float,
    keep: bool,
) -> None:
    """Start a local cluster, run a job on it, print a report, stop everything."""
    console = Console()
    faults = Faults(
        _duration("--kill-executor-after", kill_executor_after),
        _duration("--kill-master-after", kill_master_after),
    )
    n_masters = masters or (2 if faults.master_after is not None else 1)
    base_dir = tempfile.mkdtemp(prefix="zdf-demo-")
    job_data: dict[str, Any] | None = None
    if config_path:
        spec = load_job_file(config_path)
    else:
        paced = faults.executor_after is not None or faults.master_after is not None
        spec, job_data = default_job(base_dir, paced)
    cluster = LocalCluster(base_dir, executors=executors, workers=workers, masters=n_masters)
    ok = False
    with _signals(_raise_stopped, STOP_SIGNALS):
        try:
            what = f"a metastore, {n_masters} master(s) and {executors} executors"
            with console.status(f"starting {what}"):
                started = time.monotonic()
                cluster.start()
            console.print(
                f"cluster up in {time.monotonic() - started:.2f}s: master {cluster.master_addr}, "
                f"metastore {cluster.meta_addr} (logs in {base_dir}), "
                f"secured with the keys in {cluster.security_dir}"
            )
            console.print(f"dashboard: {cluster.http_url(path='/')}")
            rows = cluster.client().call(P.EXECUTOR_LIST)
            print_table(
                "executors",
                ["id", "addr", "slots", "state"],
                [[r["id"], r["addr"], r["slots"], r["state"]] for r in rows],
            )
            job = run_job(console, cluster, spec, timeout, faults)
            print_job(job)
            ok = job["state"] == "finished"
            if job_data is not None and ok:
                ok = report_bench(console, job_data, faults.executor_killed_ns)
        except KeyboardInterrupt as exc:
            by = f" by {exc.args[0]}" if isinstance(exc, Stopped) else ""
            console.print(f"interrupted{by}: stopping the cluster")
        finally:
            # A second signal must not cut the stop short: it would orphan what is left.
            with _signals(signal.SIG_IGN, (signal.SIGINT, *STOP_SIGNALS)):
                with console.status("stopping the cluster"):
                    cluster.stop()
                if not keep and ok:
                    shutil.rmtree(base_dir, ignore_errors=True)
    console.print("[green]demo finished[/]" if ok else "[red]demo failed[/]")
    if keep or not ok:
        console.print(f"logs and outputs kept in {base_dir}")
    if not ok:
        raise SystemExit(1)


def _duration(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"flag {flag}: expected {exc}, got {value!r}") from None


@dataclass
class Faults:
    """What to break during the run, and when each breakage was healed."""

    executor_after: float | None = None
    master_after: float | None = None
    killed_executor: tuple[str, float] | None = None
    killed_master: float | None = None
    executor_killed_ns: int | None = None  # wall clock, to compare with the sinks' sink_ts
    executor_recovered: bool = False
    master_recovered: bool = False

    def inject(
        self, console: Console, cluster: LocalCluster, since: float, tasks: list[Any]
    ) -> None:
        now = time.monotonic()
        due = self.executor_after is not None and now - since >= self.executor_after
        if due and self.killed_executor is None:
            self.executor_killed_ns = time.time_ns()
            self.killed_executor = (kill_busiest(cluster, tasks), now)
            console.print(f"[yellow]killed executor {self.killed_executor[0]} (kill -9)[/]")
        due = self.master_after is not None and now - since >= self.master_after
        if due and self.killed_master is None:
            leader = cluster.leader()
            if leader is not None:
                cluster.kill(leader)
                self.killed_master = now
                console.print(f"[yellow]killed the leading master {leader.name} (kill -9)[/]")

    def observe(self, console: Console, cluster: LocalCluster, tasks: list[Any]) -> None:
        now = time.monotonic()
        killed = self.killed_master
        if killed is not None and not self.master_recovered and cluster.leader() is not None:
            self.master_recovered = True
            ms = 1000 * (now - killed)
            console.print(f"[green]a standby master serves {ms:.0f} ms after the kill[/]")
        if self.killed_executor is not None and not self.executor_recovered:
            victim, at = self.killed_executor
            states = [t["state"] for t in tasks]
            moved = all(t["executor"] != victim or t["state"] == "finished" for t in tasks)
            if moved and all(s in ("running", "finished") for s in states):
                self.executor_recovered = True
                ms = 1000 * (now - at)
                console.print(f"[green]its tasks run elsewhere {ms:.0f} ms after the kill[/]")


def run_job(
    console: Console, cluster: LocalCluster, spec: JobSpec, timeout: float, faults: Faults
) -> dict[str, Any]:
    client = cluster.client()
    submitted = time.monotonic()
    job_id = str(submit(client, spec)["job_id"])
    console.print(f"submitted {job_id}: {len(spec.tasks)} tasks")
    all_running_at: float | None = None
    deadline = submitted + timeout
    with console.status("running") as status:
        while True:
            try:
                job = client.call(P.JOB_STATUS, {"job_id": job_id})
            except Timeout:
                if time.monotonic() > deadline:
                    raise
                continue  # a master failover is under way
            now = time.monotonic()
            tasks = job["tasks"]
            states = [t["state"] for t in tasks]
            if all_running_at is None and all(s in ("running", "finished") for s in states):
                all_running_at = now
                ms = 1000 * (now - submitted)
                console.print(f"all {len(tasks)} tasks running {ms:.0f} ms after submission")
            faults.inject(console, cluster, submitted, tasks)
            faults.observe(console, cluster, tasks)
            done = sum(1 for s in states if s == "finished")
            records = sum(
                float(t.get("progress", {}).get("records", 0)) for t in tasks if t["kind"] == "sink"
            )
            status.update(
                f"{job['state']}: {done}/{len(tasks)} tasks finished, {records:,.0f} records sunk"
            )
            if job["state"] in TERMINAL:
                return dict(job)
            if now > deadline:
                raise Timeout(f"job {job_id} did not end within {timeout:.0f}s")
            time.sleep(0.05)


def kill_busiest(cluster: LocalCluster, tasks: list[dict[str, Any]]) -> str:
    load: dict[str, int] = {}
    for t in tasks:
        if t["executor"] and t["state"] in ("running", "scheduled"):
            load[t["executor"]] = load.get(t["executor"], 0) + 1
    for child in sorted(cluster.executors, key=lambda c: -load.get(c.extra["id"], 0)):
        if child.alive():
            cluster.kill(child)
            return str(child.extra["id"])
    raise Timeout("no executor left to kill")


def report_bench(console: Console, job_data: dict[str, Any], killed_ns: int | None = None) -> bool:
    from zdf.cli.verify_sink import verify
    from zdf.jobs.bench import load_bench_config
    from zdf.jobs.recovery import measure_recovery, sink_times

    sink_dir = os.path.join(str(job_data["sink-dir"]), str(job_data["flow-id"]))
    summary_path = os.path.join(sink_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as fh:
            summary = json.load(fh)
        print_table("benchmark", ["figure", "value"], [[k, _fmt(v)] for k, v in summary.items()])
    config = load_bench_config(job_data, "<demo>")
    if killed_ns is not None:
        rec = measure_recovery(sink_times(sink_dir, config.streams), killed_ns)
        back = "never" if rec.recovered_s is None else f"{1000 * rec.recovered_s:.0f} ms"
        console.print(
            f"recovery: the sinks wrote {rec.normal_rate:,.0f} records/s before the kill, "
            f"were back at 90 % of that {back} after it (longest stall "
            f"{1000 * rec.stalled_s:.0f} ms)"
        )
    report = verify(config)
    state = "[green]exact[/]" if report.ok else "[red]NOT exact[/]"
    console.print(
        f"verify-sink: {state}: {report.records:,} records and {report.ddls:,} DDLs "
        f"in {len(report.files)} sink files"
    )
    for line in report.violations:
        console.print(f"  - {line}")
    return report.ok


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
