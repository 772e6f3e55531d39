"""A task's stdout and stderr, kept per attempt on its executor and read with `zdf logs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zdf import protocol as P
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster
from zdf.observe.taskout import CapturingReactor, TaskOutput, TaskStream, log_path, read_logs

pytestmark = pytest.mark.timeout(120)


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def test_callbacks_registered_in_a_scope_write_to_its_file(tmp_path: Path) -> None:
    output = TaskOutput(str(tmp_path))
    stream = TaskStream(output, sys.__stderr__)  # type: ignore[arg-type]
    reactor = CapturingReactor(output)
    try:
        with output.scope("job-1", "sink-0", 2):
            stream.write("opened\n")
            reactor.call_later(0, lambda: stream.write("from a timer\n"))
        reactor.call_later(0, lambda: stream.write("the worker's own\n"))
        reactor.run_once(0.01)
        reactor.run_once(0.01)
    finally:
        reactor.close()
    path = Path(log_path(str(tmp_path), "job-1", "sink-0", 2))
    assert path.read_text() == "opened\nfrom a timer\n"


def test_a_chatty_task_keeps_at_most_twice_the_bound(tmp_path: Path) -> None:
    output = TaskOutput(str(tmp_path), max_bytes=1000)
    with output.scope("j", "t", 1):
        for i in range(495):  # 10 bytes each: rotated at every 100th
            output.write(f"line {i:04d}\n")
    path = log_path(str(tmp_path), "j", "t", 1)
    assert os.path.getsize(path) < 1000 and os.path.getsize(path + ".1") >= 1000 - 10
    text = Path(path).read_text()
    assert text.startswith("line 0400\n") and text.endswith("line 0494\n")
    [entry] = read_logs(str(tmp_path), "j", None, None, {}, 1 << 20)
    assert entry["rotated"] and entry["data"].decode() == text


@pytest.mark.cluster(executors=1, workers=1)
def test_zdf_logs_shows_a_failed_function_tasks_output_and_traceback(cluster: LocalCluster) -> None:
    data = {
        "job-type": "function",
        "name": "chatty",
        "function": "zdf.jobs.examples:chatty",
        "tasks": 2,
        "args": [3, True],
        "max-retries": 1,
    }
    spec = build_function_job(data, "<test>").to_dict()
    job_id = cluster.client().call(P.SUBMIT_JOB, {"spec": spec})["job_id"]
    job = cluster.client().call(P.WAIT_JOB, {"job_id": job_id}, timeout=60)
    assert job["state"] == "failed"
    task = job["tasks"][0]["id"]

    out = zdf_cli("logs", job_id, task, "--master-addr", cluster.master_addr)
    assert out.returncode == 0, out.stderr
    # both attempts (one retry), each under its header, with the traceback
    assert f"==> {task} attempt 1 on exec-1 <==" in out.stdout
    assert f"==> {task} attempt 2 on exec-1 <==" in out.stdout
    assert out.stdout.count("line 3 of 3") == 2
    assert out.stdout.count("a word on stderr") == 2
    assert "RuntimeError: chatty failed after 3 lines" in out.stdout
    assert "Traceback" in out.stdout

    only = zdf_cli("logs", job_id, task, "--attempt", "2", "--master-addr", cluster.master_addr)
    assert only.returncode == 0, only.stderr
    assert only.stdout.startswith("line 1 of 3\n")  # one file: no header
    assert only.stdout.count("line 1 of 3") == 1

    unknown = zdf_cli("logs", "job-nope", "--master-addr", cluster.master_addr)
    assert unknown.returncode == 1 and "job-nope" in unknown.stderr


@pytest.mark.cluster(executors=1, workers=1)
def test_zdf_logs_follow_prints_until_the_job_ends(cluster: LocalCluster) -> None:
    data = {
        "job-type": "function",
        "name": "later",
        "function": "zdf.jobs.examples:spin",
        "tasks": 1,
        "args": [2.0],
    }
    spec = build_function_job(data, "<test>").to_dict()
    chatty = build_function_job(
        {**data, "function": "zdf.jobs.examples:chatty", "args": [2]}, "<test>"
    ).to_dict()
    spec["tasks"] = spec["tasks"] + [{**chatty["tasks"][0], "task_id": "chatty-0"}]
    job_id = cluster.client().call(P.SUBMIT_JOB, {"spec": spec})["job_id"]
    addr = cluster.master_addr
    proc = subprocess.Popen(
        [sys.executable, "-m", "zdf.cli.main", "logs", job_id, "-f", "--master-addr", addr],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "line 2 of 2" in out
    state = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})["state"]
    assert state == "finished"  # --follow returned only once the job had ended
