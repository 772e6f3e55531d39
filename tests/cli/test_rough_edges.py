"""What a new user hit first: a master that is not there, a bad address, Ctrl-C in --wait,
a progress rate that flickered."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_demo import HOLD_JOB
from zdf import protocol as P
from zdf.cli import jobs_cmd
from zdf.localcluster import LocalCluster, wait_until
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(120)


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def test_nothing_listening_names_the_address_within_the_timeout() -> None:
    addr = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    out = zdf_cli("job", "list", "--master-addr", addr, "--timeout", "0.5")
    took = time.monotonic() - started
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"no master answered at {addr} within 0.5s" in lines[0]
    assert "is a master running there?" in lines[0]
    assert took < 5  # the default deadline would be 5 s; the interpreter's start is in it


@pytest.mark.parametrize("addr", ["127.0.0.1", "http://127.0.0.1:10240", "host:port", ","])
def test_a_malformed_master_address_is_one_line(addr: str) -> None:
    out = zdf_cli("status", "--master-addr", addr)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --master-addr: expected host:port")
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.cluster(executors=1, workers=1)
def test_ctrl_c_in_wait_says_the_job_goes_on(cluster: LocalCluster, tmp_path: Path) -> None:
    job_file = tmp_path / "hold.toml"
    job_file.write_text(HOLD_JOB)
    args = ["submit-job", "--wait", "--config", str(job_file), "--master-addr", cluster.master_addr]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdf.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running() -> str | None:
            jobs = cluster.client().call(P.JOB_LIST)
            return next((j["id"] for j in jobs if j["running"] == 1), None)

        job_id = wait_until(running, 30, "the job to run")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert f"job {job_id} goes on running" in err
    assert f"zdf job cancel {job_id} --master-addr {cluster.master_addr}" in err
    assert "Traceback" not in err
    assert cluster.client().call(P.JOB_STATUS, {"job_id": job_id})["state"] == "running"
    cluster.client().call(P.JOB_CANCEL, {"job_id": job_id})


def test_wait_rate_is_steady_for_a_paced_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink reporting 1,000 records every 0.5 s, polled every 0.2 s, is 2,000 records/s
    at every poll once the window is full (it was 0 or 5,000 before)."""
    clock = [0.0]
    rates: list[str] = []

    class FakeClient:
        def call(self, op: str, body: Any = None) -> dict[str, Any]:
            done = 1000.0 * int(clock[0] / 0.5)
            state = "finished" if clock[0] >= 8 else "running"
            return {"state": state, "tasks": [{"kind": "sink", "progress": {"records": done}}]}

    def fake_sleep(seconds: float) -> None:
        clock[0] += seconds

    real_update = jobs_cmd.Progress.update

    def update(self: Any, task: Any, **fields: Any) -> None:
        if "rate" in fields and clock[0] >= 3.5:
            rates.append(fields["rate"])
        real_update(self, task, **fields)

    monkeypatch.setattr(jobs_cmd.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(jobs_cmd.time, "sleep", fake_sleep)
    monkeypatch.setattr(jobs_cmd.Progress, "update", update)
    jobs_cmd.wait_for_job(FakeClient(), "job-1", 60, False, expected=16000)  # type: ignore[arg-type]
    values = [float(r.split()[0].replace(",", "")) for r in rates]
    assert values and min(values) > 1500 and max(values) < 2500, values
