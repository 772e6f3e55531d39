"""Function tasks use the whole cluster: bursts spread, options never steal a keyword,
resources, zipped map, cancel, a restarted master (a real cluster: 2 executors x 2
workers unless marked otherwise). Timing bounds are generous: the figures go in bench/."""

from __future__ import annotations

import concurrent.futures
import operator
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import zdf
from zdf.errors import RemoteError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_burst_of_sleeps_runs_on_every_worker(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        t0 = time.perf_counter()
        futures = [client.submit(time.sleep, 0.5) for _ in range(8)]
        for future in futures:
            future.result(30)
        burst = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert list(client.map(time.sleep, [0.5] * 8)) == [None] * 8
        mapped = time.perf_counter() - t0
        # Tiny tasks too, though of a known duration by the second burst.
        pid_sets = [{f.result(30) for f in [client.submit(os.getpid) for _ in range(64)]}]
        pid_sets.append({f.result(30) for f in [client.submit(os.getpid) for _ in range(64)]})
    # Ideal 1.0 s (8 tasks of 0.5 s on 4 workers); one worker alone takes 4.0 s.
    assert burst < 1.8 and mapped < 1.8, (burst, mapped)
    assert all(len(pids) > 1 for pids in pid_sets), "every task ran on one worker process"


def test_short_tasks_do_not_wait_behind_a_long_one(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        long = client.submit(examples.hold, 2.0)
        t0 = time.perf_counter()
        short = [client.submit(time.sleep, 0.05) for _ in range(40)]
        for future in short:
            future.result(30)
        elapsed = time.perf_counter() - t0
        assert long.result(30) == 2.0
    # Ideal 0.7 s on the three other workers; behind the long task, 2 s and more.
    assert elapsed < 1.6, elapsed


def test_every_keyword_reaches_the_function_and_map_zips(cluster: LocalCluster) -> None:
    kwargs = {
        "resources": 1,
        "retries": 2,
        "max_retries": 3,
        "priority": 4,
        "name": "n",
        "key": "k",
        "timeout": 5,
        "workers": 6,
    }
    with zdf.connect(cluster.master_addr) as client:
        assert client.submit(dict, **kwargs).result(30) == kwargs
        view = client.options(retries=0, priority=1, name="kw")
        assert view.submit(dict, **kwargs).result(30) == kwargs
        assert view.options(resources={"cpu": 1}).submit(dict, a=1).result(30) == {"a": 1}
        with pytest.raises(ValueError):
            client.options(resources={"gpu": -1})
        check_map(client)


@pytest.mark.cluster(resources={"gpu": 1})
def test_tasks_run_only_where_their_resources_are_free(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        gpu = client.options(resources={"gpu": 1})
        t0 = time.perf_counter()
        futures = [gpu.submit(time.sleep, 0.4) for _ in range(4)]
        for future in futures:
            future.result(30)
        elapsed = time.perf_counter() - t0
        # Two gpus in the cluster (one per executor): two rounds, though four workers.
        assert elapsed >= 0.8, elapsed
        t0 = time.perf_counter()
        with pytest.raises(RemoteError, match=r"no executor can run this task.*gpu=2"):
            client.options(resources={"gpu": 2}).submit(time.sleep, 0).result(30)
        assert time.perf_counter() - t0 < 5, "an infeasible task fails at once"


def check_map(client: zdf.Client) -> None:
    """map zips its iterables, lazily, results in order, with a deadline."""
    assert list(client.map(operator.add, [1, 2, 3], [10, 20])) == [11, 22]
    endless = client.map(operator.mul, range(1000), iter(int, 1))  # iter(int, 1): 0, 0, ...
    assert list(endless) == [0] * 1000
    letters = client.map(operator.add, "abc", "xyz", chunksize=2)
    assert list(letters) == ["ax", "by", "cz"]
    results = client.map(time.sleep, [2.0], timeout=0.2)
    with pytest.raises(TimeoutError):
        list(results)


@pytest.mark.cluster(executors=1, workers=1)
def test_cancel_is_true_only_for_a_task_that_never_runs(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with zdf.connect(cluster.master_addr) as client:
        running = client.submit(examples.hold_once, str(tmp_path / "running"), 1.0)
        wait_until((tmp_path / "running").exists, 30, "the first task to start")
        waiting = client.submit(examples.hold_once, str(tmp_path / "waiting"), 0)
        after = client.submit(examples.square, 3)
        assert running.cancel() is False, "it runs: it cannot be canceled"
        assert waiting.cancel() is True and waiting.cancelled()
        assert running.result(30) == "first" and not running.cancelled()
        assert after.result(30) == 9  # queued after the canceled one, done: it did not run
        assert not (tmp_path / "waiting").exists()
        with pytest.raises(concurrent.futures.CancelledError):
            waiting.result(1)


def test_function_tasks_run_after_the_only_master_restarts(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert client.submit(examples.square, 4).result(30) == 16
    old = cluster.masters[0]
    os.kill(old.pid, signal.SIGTERM)
    old.proc.wait(10)
    cluster.masters.remove(old)
    cluster.children.remove(old)
    cluster.start_master(0)  # the same address
    cluster.wait_ready(30)
    with zdf.connect(cluster.master_addr, timeout=30) as client:
        futures = [client.submit(examples.square, i) for i in range(20)]
        assert [f.result(30) for f in futures] == [i * i for i in range(20)]


def test_connect_without_an_address_runs_a_cluster_of_its_own() -> None:
    client = zdf.connect()
    try:
        cluster = client._owned_cluster
        assert cluster is not None and os.path.isdir(cluster.base_dir)
        pids = [child.pid for child in cluster.children]
        assert client.submit(examples.square, 7).result(30) == 49
    finally:
        client.close()
    assert not os.path.exists(cluster.base_dir), "its temporary folder is removed"
    assert not any(_alive(pid) for pid in pids), "its processes are stopped"
    with zdf.LocalCluster(executors=1, workers=1) as local:
        folder = local.base_dir
        with zdf.connect(local.master_addr) as client:
            assert client.submit(examples.square, 3).result(30) == 9
    assert not os.path.exists(folder)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
