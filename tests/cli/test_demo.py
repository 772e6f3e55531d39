"""``zdf demo`` as a user runs it: a child process with its own cluster of processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from zdf.localcluster import wait_until

pytestmark = pytest.mark.timeout(120)

HOLD_JOB = """\
job-type = "function"
name = "hold"
function = "zdf.jobs.examples:hold"
tasks = 1
args = [300]
"""


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short temporary directory for the demo's own (ipc:// paths must stay short)."""
    path = tempfile.mkdtemp(prefix="zt-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_lines(proc: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_the_whole_demo_cluster(
    tmp_path: Path, short_tmp: str, signum: int
) -> None:
    job = tmp_path / "hold.toml"
    job.write_text(HOLD_JOB)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdf.cli.main", "demo", "--config", str(job), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": short_tmp},  # a failed demo keeps its folder there
    )
    lines: list[str] = []
    reader = read_lines(proc, lines)
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: any("tasks running" in line for line in lines), 60, "the job running")
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for role in ("metastore", "master", "executor", "zdf.executor.worker"):
            assert role in names, f"no {role} among the demo's children: {names}"
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running after the demo exited: {alive}"
        reader.join(timeout=5)
        name = signal.Signals(signum).name
        assert any(f"interrupted by {name}: stopping the cluster" in line for line in lines), lines
        assert code == 1
    finally:
        kill_all(proc, children)


def kill_all(proc: subprocess.Popen[str], known: list[psutil.Process]) -> None:
    """SIGKILL the demo and every process it started, by pid (psutil checks that a pid
    still names the process it named, so a reused one is left alone)."""
    everyone = list(known)
    if proc.poll() is None:
        try:
            everyone += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        proc.kill()
    proc.wait(timeout=10)
    for child in everyone:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(everyone, timeout=10)


FAIL_JOB = """\
job-type = "function"
name = "fails"
function = "zdf.jobs.examples:fail"
tasks = 1
args = ["on purpose"]
max-retries = 0
"""


def test_a_failed_demo_keeps_its_logs(tmp_path: Path, short_tmp: str) -> None:
    job = tmp_path / "fail.toml"
    job.write_text(FAIL_JOB)
    out = subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", "demo", "--config", str(job), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "TMPDIR": short_tmp, "COLUMNS": "200"},
    )
    assert out.returncode == 1
    assert "demo failed" in out.stdout
    assert "dashboard: http://127.0.0.1:" in out.stdout
    kept = out.stdout.rsplit("logs and outputs kept in ", 1)[1].split()[0]
    assert Path(kept).is_dir() and (Path(kept) / "master-1.log").exists()
