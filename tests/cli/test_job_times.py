"""`job list` times and durations, `job delete`, and `zdf status` for an operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zdf import protocol as P
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster
from zdf.master.persist import FRAMEWORK_JOBS
from zdf.metastore.client import MetaClient
from zdf.observe.timefmt import duration

pytestmark = pytest.mark.timeout(120)


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )


def test_durations_read_well() -> None:
    assert [duration(x) for x in (None, 0.4242, 12.34, 245, 7620)] == [
        "",
        "0.42s",
        "12.3s",
        "4m05s",
        "2h07m",
    ]


def submit(cluster: LocalCluster, fn: str, args: list[object]) -> str:
    data = {"job-type": "function", "name": "t", "function": fn, "tasks": 1, "args": args}
    spec = build_function_job(data, "<test>").to_dict()
    return str(cluster.client().call(P.SUBMIT_JOB, {"spec": spec})["job_id"])


@pytest.mark.cluster(executors=1, workers=1)
def test_job_list_times_delete_and_status(cluster: LocalCluster) -> None:
    addr = cluster.master_addr
    done = submit(cluster, "zdf.jobs.examples:spin", [0.3])
    cluster.client().call(P.WAIT_JOB, {"job_id": done}, timeout=30)
    running = submit(cluster, "zdf.jobs.examples:hold", [300])

    out = zdf_cli("job", "list", "--master-addr", addr)
    assert out.returncode == 0, out.stderr
    assert "submitted" in out.stdout and "duration" in out.stdout
    row = next(line for line in out.stdout.splitlines() if done in line)
    assert any(cell.strip().endswith("s") and "." in cell for cell in row.split("│"))

    status = zdf_cli("status", "--master-addr", addr)
    assert status.returncode == 0, status.stderr
    assert "slots in use" in status.stdout
    assert "function tasks:" in status.stdout
    executors = json.loads(
        zdf_cli("executor", "list", "--master-addr", addr, "--format", "json").stdout
    )
    assert executors[0]["used"] == 1  # the held task

    refused = zdf_cli("job", "delete", running, "--master-addr", addr)
    assert refused.returncode == 1 and "cancel it first" in refused.stderr
    deleted = zdf_cli("job", "delete", done, "--master-addr", addr)
    assert deleted.returncode == 0, deleted.stderr
    ids = [
        j["id"]
        for j in json.loads(
            zdf_cli("job", "list", "--master-addr", addr, "--format", "json").stdout
        )
    ]
    assert done not in ids and running in ids
    with MetaClient(cluster.meta_addrs) as meta:
        keys = [kv.key.decode() for kv in meta.range(FRAMEWORK_JOBS)]
    assert FRAMEWORK_JOBS + done not in keys and FRAMEWORK_JOBS + running in keys
    cluster.client().call(P.JOB_CANCEL, {"job_id": running})
