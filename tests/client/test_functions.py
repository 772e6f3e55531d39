"""Short function tasks through the whole path: client -> master -> worker -> client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest

import zdf
from zdf.errors import RemoteError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def test_submit_result_and_numpy_both_ways(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert client.submit(examples.square, 7).result(10) == 49
        assert client.submit("zdf.jobs.examples:square", 3).result(10) == 9
        array = np.arange(100_000, dtype=np.float64)
        out = client.submit(examples.total, array).result(10)
        assert out["sum"] == float(array.sum())
        np.testing.assert_array_equal(out["doubled"], array * 2)


def test_map_keeps_order(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert list(client.map(examples.square, range(1000), chunksize=7)) == [
            i * i for i in range(1000)
        ]
        assert list(client.map(examples.square, [])) == []


def test_remote_exceptions_keep_type_and_traceback(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        future = client.submit(examples.fail, "kaput", max_retries=0)
        with pytest.raises(RuntimeError, match="kaput") as info:
            future.result(10)
        assert "examples.py" in info.value.remote_traceback  # type: ignore[attr-defined]
        assert isinstance(future.exception(), RuntimeError)
        custom = client.submit(examples.raise_custom, "odd").exception(10)
        assert isinstance(custom, RemoteError)
        assert custom.remote_type == "zdf.jobs.examples.CustomError" and custom.message == "odd"
        with pytest.raises(ModuleNotFoundError):
            client.submit("no.such.module:fn").result(10)


def test_unnameable_functions_are_refused_locally(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client, pytest.raises(ValueError, match="import path"):
        client.submit(lambda: 1)


@pytest.mark.cluster(executors=1, workers=1)
def test_cancel_and_timeout(cluster: LocalCluster, tmp_path: Path) -> None:
    with zdf.connect(cluster.master_addr) as client:
        blocker = client.submit(examples.hold_once, str(tmp_path / "m"), 30)
        queued = [client.submit(examples.square, i) for i in range(5)]
        with pytest.raises(concurrent.futures.TimeoutError):
            blocker.result(timeout=0.2)
        assert all(f.cancel() for f in queued[2:])
        assert all(f.cancelled() for f in queued[2:])
        assert not blocker.done()


def test_await_and_as_completed(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:

        async def main() -> list[int]:
            return list(
                await asyncio.gather(*(client.submit(examples.square, i) for i in range(10)))
            )

        assert asyncio.run(main()) == [i * i for i in range(10)]
        futures = [client.submit(examples.square, i) for i in range(50)]
        done = {f.result() for f in zdf.as_completed(futures, timeout=30)}
        assert done == {i * i for i in range(50)}


def _worker_pid(marker: Path) -> int:
    return int(wait_until(lambda: marker.exists() and marker.read_text(), 10, "the task to start"))


def test_killed_worker_task_is_retried_once(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with zdf.connect(cluster.master_addr) as client:
        future = client.submit(examples.hold_once, str(marker), 60)
        os.kill(_worker_pid(marker), signal.SIGKILL)
        assert future.result(timeout=10) == "retried"
        assert client.pending == 0


def test_killed_executor_task_is_retried_elsewhere(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with zdf.connect(cluster.master_addr) as client:
        future = client.submit(examples.hold_once, str(marker), 60)
        pid = _worker_pid(marker)
        parent = psutil.Process(pid).ppid()
        victim = next(c for c in cluster.executors if c.pid == parent)
        try:
            cluster.kill(victim)
            assert future.result(timeout=10) == "retried"
            # The orphaned worker does not sit out its 60 s function: it dies with its executor.
            wait_until(lambda: not _running(pid), 5, "the orphaned worker to exit")
        finally:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_many_tasks_keep_client_memory_bounded(cluster: LocalCluster) -> None:
    n = int(os.environ.get("ZDF_MANY_TASKS", "100000"))
    me = psutil.Process()
    with zdf.connect(cluster.master_addr, max_inflight=2000) as client:
        for _ in range(2000):
            client.submit(examples.noop)
        wait_until(lambda: client.pending == 0, 30, "warm-up tasks")
        before = me.memory_info().rss
        last = None
        for _ in range(n):
            last = client.submit(examples.noop)
            assert client.pending <= 2000
        assert last is not None and last.result(60) is None
        wait_until(lambda: client.pending == 0, 60, "all tasks")
        grown = me.memory_info().rss - before
    assert grown < 64 * 2**20, f"client grew by {grown / 2**20:.1f} MiB over {n} tasks"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_million_tasks(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZDF_MANY_TASKS", "1000000")
    test_many_tasks_keep_client_memory_bounded(cluster)
