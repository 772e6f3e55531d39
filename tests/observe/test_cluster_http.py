"""Every process of a live local cluster serves /metrics and /health; the figures are true."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import zdf
from zdf import protocol as P
from zdf.jobs import build_job, examples
from zdf.localcluster import LocalCluster, wait_until
from zdf.observe.rates import records_done
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(120)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def total(page: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry every one of ``labels``."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(
        value
        for key, value in page.items()
        if (m := re.fullmatch(r"(\w+)\{(.*)\}", key))
        and m.group(1) == name
        and wanted <= set(m.group(2).split(","))
    )


@pytest.mark.cluster(executors=1, workers=2)
def test_metrics_follow_a_job_and_function_tasks(cluster: LocalCluster, tmp_path: Path) -> None:
    data = {
        "flow-id": "obs",
        "table-num": 2,
        "servers": 1,
        "rcd-cnt": 3000,
        "ddl-freq": 1000,
        "sink-dir": str(tmp_path / "sink"),
    }
    spec = build_job(data, "<test>")
    job_id = cluster.client().call(P.SUBMIT_JOB, {"spec": spec.to_dict()})["job_id"]
    job = cluster.client().call(P.WAIT_JOB, {"job_id": job_id}, timeout=60)
    assert job["state"] == "finished"
    with zdf.connect(cluster.master_addr) as client:
        # The first call goes through the master's queue (later ones may run under a
        # lease, reported to the master in bulk: test_failures_under_a_lease_are_counted).
        with pytest.raises(Exception, match="boom"):
            client.submit(examples.fail, "boom").result(10)
        assert client.submit(examples.square, 3).result(10) == 9

    status, text = get(cluster.http_url(cluster.masters[0], "/metrics"))
    assert status == 200
    page = samples(text)
    assert page["zdf_master_leader"] == 1
    assert page['zdf_executors{state="alive"}'] == 1
    assert page['zdf_executors{state="dead"}'] == 0
    assert page['zdf_tasks{state="finished"}'] == len(job["tasks"])
    assert page['zdf_jobs{state="finished"}'] == 1
    sinks = total(page, "zdf_task_records", job=job_id, kind="sink")
    assert sinks == records_done(job["tasks"]) >= 2 * 3000
    assert page["zdf_function_tasks_submitted_total"] >= 1
    assert page["zdf_function_tasks_failed_total"] == 1
    wait_until(
        lambda: (
            samples(get(cluster.http_url(path="/metrics"))[1])["zdf_function_tasks_completed_total"]
            == 2
        ),
        10,
        "both function tasks counted",
    )

    status, text = get(cluster.http_url(cluster.metastores[0], "/metrics"))
    page = samples(text)
    assert page["zdf_metastore_leader"] == 1
    assert page["zdf_metastore_term"] >= 1
    assert page["zdf_metastore_commit_index"] > 0
    # every framework write of the job went through the metastore and was timed
    assert (
        page["zdf_metastore_write_latency_seconds_count"]
        >= page["zdf_metastore_write_commands_total"]
        > 0
    )

    status, text = get(cluster.http_url(cluster.executors[0], "/metrics"))
    page = samples(text)
    assert page["zdf_executor_registered"] == 1
    assert page["zdf_executor_workers"] == 2

    for child in [cluster.masters[0], cluster.metastores[0], cluster.executors[0]]:
        status, body = get(cluster.http_url(child, "/health"))
        assert status == 200, body
        assert json.loads(body)["status"] == "serving"


@pytest.mark.cluster(executors=1, workers=1)
def test_failures_under_a_lease_are_counted(cluster: LocalCluster) -> None:
    """Tasks sent straight to a leased worker reach the master only as counts: the
    failed ones among them are counted as failed, and all of them as submitted."""
    with zdf.connect(cluster.master_addr, log_to_driver=False) as client:
        wait_until(
            lambda: client.submit(examples.noop).result(10) is None and client.leased_worker,
            10,
            "a lease",
        )
        for _ in range(3):
            assert client.leased_worker  # the next lone task goes past the master
            with pytest.raises(Exception, match="boom"):
                client.submit(examples.fail, "boom").result(10)

    def counted() -> dict[str, float] | None:
        page = samples(get(cluster.http_url(path="/metrics"))[1])
        return page if page["zdf_function_tasks_failed_total"] >= 3 else None

    page = wait_until(counted, 10, "the failures under the lease counted")
    assert page["zdf_function_tasks_failed_total"] == 3
    assert page["zdf_function_tasks_submitted_total"] >= page["zdf_function_tasks_completed_total"]


@pytest.mark.cluster(executors=1, workers=1)
def test_executor_health_turns_503_when_its_master_is_gone(cluster: LocalCluster) -> None:
    url = cluster.http_url(cluster.executors[0], "/health")
    assert get(url)[0] == 200
    cluster.kill(cluster.masters[0])
    _, body = wait_until(lambda: (r := get(url))[0] == 503 and r, 15, "a 503")
    assert json.loads(body)["registered"] is False


def test_a_busy_http_port_stops_the_process_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "zdf.cli.main",
                "executor",
                "--http-addr",
                f"127.0.0.1:{port}",
                "--worker-addr",
                f"127.0.0.1:{free_port()}",
                "--join",
                f"127.0.0.1:{free_port()}",
                "--workers",
                "1",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert f"error: cannot serve http at 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
