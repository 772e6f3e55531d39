"""The walking skeleton end to end: real processes, real sockets, loopback only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import zmq

from zdf import protocol as P
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster, wait_until
from zdf.wire import make_socket
from zdf.wire.codec import Kind, decode, encode, packb

pytestmark = pytest.mark.timeout(90)


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def function_job(fn: str, tasks: int, args: list[object] | None = None, retries: int = 0) -> dict:
    data = {
        "job-type": "function",
        "name": "t",
        "function": fn,
        "tasks": tasks,
        "args": args or [],
        "max-retries": retries,
    }
    return build_function_job(data, "<test>").to_dict()


def submit(cluster: LocalCluster, spec: dict) -> str:
    return str(cluster.client().call(P.SUBMIT_JOB, {"spec": spec})["job_id"])


def wait_state(cluster: LocalCluster, job_id: str, states: set[str], timeout: float = 30) -> dict:
    def check() -> dict | None:
        job = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})
        return job if job["state"] in states else None

    return dict(wait_until(check, timeout, f"job {job_id} to reach {states}"))


def test_executors_register_and_are_listed(cluster: LocalCluster) -> None:
    out = zdf_cli("executor", "list", "--master-addr", cluster.master_addr, "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["id"] for r in rows) == ["exec-1", "exec-2"]
    for row in rows:
        assert (
            row["state"] == "alive" and row["slots"] == 32 and row["addr"].startswith("127.0.0.1:")
        )
    status = zdf_cli("status", "--master-addr", cluster.master_addr, "--format", "json")
    assert json.loads(status.stdout)["executors"]["alive"] == 2


def test_executors_are_in_discovery(cluster: LocalCluster) -> None:
    from zdf.metastore.client import MetaClient

    with MetaClient([cluster.meta_addr]) as meta:
        keys = sorted(kv.key for kv in meta.range("/zdf/discovery/executors/"))
    assert keys == [b"/zdf/discovery/executors/exec-1", b"/zdf/discovery/executors/exec-2"]


def test_function_job_runs_to_finished_with_results(cluster: LocalCluster) -> None:
    job_id = submit(cluster, function_job("zdf.jobs.examples:square", 8, ["{i}"]))
    job = wait_state(cluster, job_id, {"finished", "failed"})
    assert job["state"] == "finished"
    results = sorted(t["info"]["result"] for t in job["tasks"])
    assert results == sorted(i * i for i in range(8))
    assert {t["executor"] for t in job["tasks"]} == {"exec-1", "exec-2"}, "tasks spread"
    out = zdf_cli("job", "status", job_id, "--master-addr", cluster.master_addr, "--format", "json")
    doc = json.loads(out.stdout)
    assert doc["id"] == job_id and doc["state"] == "finished"
    assert {"id", "kind", "executor", "state", "attempt"} <= set(doc["tasks"][0])
    listed = json.loads(
        zdf_cli("job", "list", "--master-addr", cluster.master_addr, "--format", "json").stdout
    )
    assert [j["id"] for j in listed] == [job_id]


def test_failing_function_fails_the_job_with_its_error(cluster: LocalCluster) -> None:
    job_id = submit(cluster, function_job("zdf.jobs.examples:fail", 1, ["kaput"], retries=1))
    job = wait_state(cluster, job_id, {"finished", "failed"})
    assert job["state"] == "failed"
    assert "kaput" in job["error"]
    assert job["tasks"][0]["attempt"] == 2, "one retry before failing"


def test_cancel_stops_a_running_job(cluster: LocalCluster) -> None:
    job_id = submit(cluster, function_job("zdf.jobs.examples:hold", 2, [60]))
    wait_state(cluster, job_id, {"running"})
    out = zdf_cli("job", "cancel", job_id, "--master-addr", cluster.master_addr, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "canceled"
    job = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})
    assert all(t["state"] == "canceled" for t in job["tasks"])


def test_submit_job_cli_wait(cluster: LocalCluster, tmp_path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'job-type = "function"\nfunction = "zdf.jobs.examples:square"\ntasks = 3\nargs = [4]\n'
    )
    out = zdf_cli(
        "submit-job",
        "--master-addr",
        cluster.master_addr,
        "--config",
        str(path),
        "--wait",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["state"] == "finished" and [t["info"]["result"] for t in job["tasks"]] == [
        16,
        16,
        16,
    ]
    out = zdf_cli(
        "submit-job",
        "--master-addr",
        cluster.master_addr,
        "--config",
        str(path),
        "--format",
        "json",
    )
    assert set(json.loads(out.stdout)) == {"job_id"}


def test_bad_job_file_is_one_line_and_cluster_lives(cluster: LocalCluster, tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('job-type = "function"\nfunction = "no colon"\n')
    out = zdf_cli("submit-job", "--master-addr", cluster.master_addr, "--config", str(path))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "key 'function'" in out.stderr
    assert cluster.client().call(P.PING)["master"]


@pytest.mark.cluster(keepalive_interval="200ms", keepalive_ttl="1s")
def test_killed_executor_is_dead_fast_and_its_tasks_move(cluster: LocalCluster) -> None:
    job_id = submit(cluster, function_job("zdf.jobs.examples:hold", 2, [30]))
    job = wait_state(cluster, job_id, {"running"})
    victim = cluster.executors[0]
    killed_at = time.monotonic()
    cluster.kill(victim)
    wait_until(lambda: cluster.executor_state("exec-1") == "dead", 2.0, "exec-1 to be dead")
    detected = time.monotonic() - killed_at
    assert detected < 1.0, f"socket events should beat the 1 s ttl, took {detected:.3f}s"

    def moved() -> bool:
        j = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})
        return all(t["executor"] == "exec-2" and t["state"] == "running" for t in j["tasks"])

    wait_until(moved, 3.0, "the tasks to run on exec-2")
    assert time.monotonic() - killed_at < 3.0
    assert any(t["executor"] == "exec-1" for t in job["tasks"])


def test_garbage_to_master_and_executor_sockets(cluster: LocalCluster) -> None:
    bad = [
        [b"\xc1\xc1\xc1"],
        [packb({"v": 999, "k": "req", "op": "ping", "rid": 1})],
        [encode(Kind.REQUEST, "no_such_op", 1, None)],
        [encode(Kind.REQUEST, P.REGISTER, 2, {"executor_id": 5})],
        [encode(Kind.REQUEST, P.SUBMIT_JOB, 3, {"spec": {"tasks": "nope"}})],
        [encode(Kind.REQUEST, P.TASK_STATE, 4, {"job_id": "x", "task_id": 1})],
        [encode(Kind.EVENT, P.FN_SUBMIT, 0, {"tasks": [[1, "m:f", 0, 9]]})],
        [b"x" * (65 * 1024 * 1024)],
    ]
    for frames in bad:
        sock = make_socket(zmq.DEALER, connect=cluster.master_addr)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            if len(frames[0]) < 1000 and frames[0][:1] != b"\x80" and sock.poll(2000):
                assert decode(sock.recv_multipart()[0]).kind is Kind.ERROR
        finally:
            sock.close(0)
    # Raw bytes that are not ZMTP at all, at the master and at an executor's PUB.
    for addr in [cluster.master_addr, cluster.executors[0].addr]:
        host, port = addr.rsplit(":", 1)
        for junk in [b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 64, b"\xff" + b"\x00" * 8]:
            with socket.create_connection((host, int(port)), timeout=2) as raw:
                raw.sendall(junk)
    assert cluster.client().call(P.PING)["master"]
    rows = cluster.client().call(P.EXECUTOR_LIST)
    assert all(r["state"] == "alive" for r in rows)
    for child in cluster.children:
        assert child.alive(), f"{child.name} died"
    job_id = submit(cluster, function_job("zdf.jobs.examples:square", 2, [3]))
    assert wait_state(cluster, job_id, {"finished", "failed"})["state"] == "finished"


def test_a_restarted_task_resumes_from_its_checkpoint(cluster: LocalCluster) -> None:
    from zdf.jobs.spec import JobSpec, TaskSpec

    spec = JobSpec(
        "count",
        "custom",
        [
            TaskSpec(
                "count",
                "counter",
                "zdf.jobs.counter:Counter",
                {"target": 300, "every": 0.01, "checkpoint_each": 10},
            )
        ],
    )
    job_id = submit(cluster, spec.to_dict())

    def counted() -> dict | None:
        job = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})
        task = job["tasks"][0]
        return task if task["progress"].get("records", 0) >= 50 else None

    task = wait_until(counted, 20, "the counter to pass 50")
    victim = next(c for c in cluster.executors if c.extra["id"] == task["executor"])
    cluster.kill(victim)
    job = wait_state(cluster, job_id, {"finished", "failed"}, timeout=30)
    assert job["state"] == "finished", job.get("error")
    (task,) = job["tasks"]
    assert task["attempt"] == 2 and task["executor"] != victim.extra["id"]
    assert task["info"]["count"] == 300
    assert task["info"]["resumed_from"] >= 40, "resumed from the checkpoint, not from 0"


def test_a_hung_executor_is_dead_within_the_ttl_and_comes_back(cluster: LocalCluster) -> None:
    victim = cluster.executors[0]
    stopped_at = time.monotonic()
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: cluster.executor_state("exec-1") == "dead", 3.0, "exec-1 to be dead")
        took = time.monotonic() - stopped_at
        assert took < 1.5, f"a silent executor is dead after keepalive-ttl (1 s), took {took:.2f}s"
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    # Once it runs again it notices the master saw it die, and registers anew.
    wait_until(lambda: cluster.executor_state("exec-1") == "alive", 10.0, "exec-1 to be back")


def test_a_job_submitted_in_parts_runs_whole(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zdf.jobs import submit as submit_module
    from zdf.jobs.spec import JobSpec

    monkeypatch.setattr(submit_module, "PART_TASKS", 10)  # 35 tasks: 4 parts
    spec = JobSpec.from_dict(function_job("zdf.jobs.examples:square", 35, ["{i}"]))
    job_id = submit_module.submit_spec(cluster.client(), spec)["job_id"]
    job = wait_state(cluster, job_id, {"finished", "failed"}, timeout=30)
    assert job["state"] == "finished", job.get("error")
    assert [t["info"]["result"] for t in job["tasks"]] == [i * i for i in range(35)]
    page = cluster.client().call(P.JOB_STATUS, {"job_id": job_id, "offset": 30, "limit": 10})
    assert page["task_count"] == 35 and [t["id"] for t in page["tasks"]] == [
        f"call-{i}" for i in range(30, 35)
    ]
