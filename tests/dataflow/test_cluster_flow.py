"""Dataflow jobs on a real local cluster: submitted with ``Client.submit_job``, and an
executor killed (SIGKILL) mid-job with a hash edge; the sums must still be exact."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from zdf.cli.main import main
from zdf.client.client import Client
from zdf.dataflow import Flow
from zdf.dataflow.builtin import KeyedSum, Sequence
from zdf.dataflow.verify import verify_flow
from zdf.jobs import build_job
from zdf.localcluster import LocalCluster, wait_until

from .jobfiles import sums_job_file
from .test_local_flow import check_sums

pytestmark = pytest.mark.timeout(120)


def sums_flow(out: Path, stop: int, rate: int = 0) -> Flow:
    flow = Flow("sums")
    (
        flow.source("numbers", Sequence, parallelism=2, stop=stop, keys=97, batch=8192, rate=rate)
        .key_by("key")
        .apply("sum", KeyedSum, parallelism=3)
        .sink("out", dir=str(out))
    )
    return flow


def summed(job: dict[str, Any]) -> float:
    return sum(float(t["progress"].get("records", 0)) for t in job["tasks"] if t["kind"] == "sum")


def test_a_flow_submitted_from_python_runs_exactly(cluster: LocalCluster, tmp_path: Path) -> None:
    flow = sums_flow(tmp_path, 1_000_000)
    with Client(cluster.master_addr) as client:
        job_id = client.submit_job(flow)
        job = client.wait_job(job_id, timeout=60)
    assert job["state"] == "finished", job.get("error")
    check_sums(tmp_path, 1_000_000, 97)
    # zdf job status shows records per task.
    assert summed(job) == 1_000_000
    assert verify_flow(flow.to_job()).ok
    # The same graph as a job file, through zdf submit-job.
    path = tmp_path / "sums.toml"
    path.write_text(sums_job_file(tmp_path / "cli", 300000, 97))
    args = ["submit-job", "--master-addr", cluster.master_addr, "--config", str(path)]
    result = CliRunner().invoke(main, [*args, "--wait", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "finished"
    assert verify_flow(build_job(tomllib.loads(path.read_text()), str(path))).ok


def kill_executor_mid_flow(
    cluster: LocalCluster, tmp_path: Path, seed: int, shares: tuple[float, float] = (0.2, 0.6)
) -> None:
    """SIGKILL the busiest executor once the KeyedSums took a share of the rows drawn
    from ``shares``; the job must finish with exact sums."""
    rng = random.Random(seed)
    stop = 2_000_000
    flow = sums_flow(tmp_path, stop, rate=400_000)  # about 2.5 s unhurt
    with Client(cluster.master_addr) as client:
        job_id = client.submit_job(flow)
        share = rng.uniform(*shares)
        wait_until(lambda: summed(client.job_status(job_id)) >= share * stop, 30, f"{share:.0%}")
        tasks = client.job_status(job_id)["tasks"]
        load: dict[str, int] = {}
        for t in tasks:
            if t["state"] == "running":
                load[t["executor"]] = load.get(t["executor"], 0) + 1
        victim = max(
            (c for c in cluster.executors if c.alive()), key=lambda c: load.get(c.extra["id"], 0)
        )
        cluster.kill(victim)
        job = client.wait_job(job_id, timeout=60)
    assert job["state"] == "finished", job.get("error")
    moved = [t["id"] for t in job["tasks"] if t["attempt"] >= 2]  # the first placement is 1
    assert moved, "some task ran again elsewhere"
    check_sums(tmp_path, stop, 97)


@pytest.mark.cluster(executors=3)
def test_executor_sigkill_with_a_hash_edge_keeps_the_sums_exact(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    kill_executor_mid_flow(cluster, tmp_path, seed=1)


@pytest.mark.slow
@pytest.mark.cluster(executors=3)
@pytest.mark.parametrize("seed", range(8))
def test_executor_sigkill_many_seeds(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    kill_executor_mid_flow(cluster, tmp_path, seed=100 + seed, shares=(0.02, 0.95))


@pytest.mark.slow
@pytest.mark.cluster(executors=3)
@pytest.mark.parametrize("seed", range(4))
def test_executor_sigkill_while_sinks_write_every_row(
    cluster: LocalCluster, tmp_path: Path, seed: int
) -> None:
    """Sequence -> rebalance -> FileSink: the sinks write all the time, so a kill lands
    mid-write; every value must be in the files exactly once."""
    rng = random.Random(200 + seed)
    stop = 1_500_000
    flow = Flow("copy")
    flow.source(
        "numbers", Sequence, parallelism=2, stop=stop, batch=4096, rate=300_000
    ).rebalance().sink("raw", parallelism=3, dir=str(tmp_path))
    with Client(cluster.master_addr) as client:
        job_id = client.submit_job(flow)

        def written() -> float:
            tasks = client.job_status(job_id)["tasks"]
            return sum(float(t["progress"].get("records", 0)) for t in tasks if t["kind"] == "raw")

        share = rng.uniform(0.1, 0.9)
        wait_until(lambda: written() >= share * stop, 30, f"{share:.0%} written")
        sinks = {t["executor"] for t in client.job_status(job_id)["tasks"] if t["kind"] == "raw"}
        victim = next(c for c in cluster.executors if c.extra["id"] in sinks)
        cluster.kill(victim)
        job = client.wait_job(job_id, timeout=60)
    assert job["state"] == "finished", job.get("error")
    assert any(t["attempt"] >= 2 for t in job["tasks"] if t["kind"] == "raw")
    parts = [np.load(tmp_path / "copy" / f"raw-{i}.npy") for i in range(3)]
    values = np.sort(np.concatenate([p["value"] for p in parts]))
    assert len(values) == stop and (values == np.arange(stop)).all()
