"""Short function tasks through the whole path: client -> master -> worker -> client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq

import zdf
from zdf import protocol as P
from zdf.errors import RemoteError, ZdfError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until
from zdf.wire.codec import Kind, encode
from zdf.wire.payload import pack
from zdf.wire.sockets import make_socket

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
        future = client.options(retries=0).submit(examples.fail, "kaput")
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
    with zdf.connect(cluster.master_addr) as client:
        assert not client.allow_pickle
        with pytest.raises(ValueError, match=r"import path.*allow-pickle"):
            client.submit(lambda: 1)
        with pytest.raises(ValueError, match="import path"):
            list(client.map(lambda x: x, [1]))
        # A client that sends a pickle anyway is refused by the master.
        client.allow_pickle = True
        with pytest.raises(PermissionError, match="allow-pickle"):
            client.options(retries=0).submit(lambda: 1).result(10)


@pytest.mark.cluster(extra_env={"ZDF_ALLOW_PICKLE": "true"})
def test_pickled_functions_where_the_cluster_allows_them(cluster: LocalCluster) -> None:
    offset = 100
    with zdf.connect(cluster.master_addr) as client:
        assert client.allow_pickle
        assert client.submit(lambda x: x + offset, 1).result(10) == 101
        assert list(client.map(lambda x: x * offset, range(50), chunksize=4)) == [
            i * 100 for i in range(50)
        ]
        with pytest.raises(ZeroDivisionError):
            client.options(retries=0).submit(lambda: 1 / 0).result(10)
        # Named functions still travel by name.
        assert client.submit(examples.square, 5).result(10) == 25


def test_results_through_the_master_when_asked(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr, direct_results=False) as client:
        assert client.reply_addr == ""
        assert client.submit(examples.square, 9).result(10) == 81
        assert list(client.map(examples.square, range(300), chunksize=3)) == [
            i * i for i in range(300)
        ]
        with pytest.raises(RuntimeError, match="via master"):
            client.options(retries=0).submit(examples.fail, "via master").result(10)


def test_a_lone_task_completes_for_every_way_of_waiting(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        # Callback: the I/O thread takes the result over from the (absent) caller.
        fired = threading.Event()
        client.submit(examples.square, 3).add_done_callback(lambda f: fired.set())
        assert fired.wait(10)
        # Polling done() only: the fallback poll delivers it.
        polled = client.submit(examples.square, 4)
        wait_until(polled.done, 10, "a polled lone task")
        assert polled.result(0) == 16
        # await, lone.
        assert asyncio.run(_await(client.submit(examples.square, 6))) == 36

        # Several threads waiting at once, each on its own tasks.
        def worker(base: int) -> list[int]:
            return [client.submit(examples.square, base + i).result(10) for i in range(200)]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(worker, [0, 1000, 2000, 3000]))
        assert results == [[(b + i) ** 2 for i in range(200)] for b in (0, 1000, 2000, 3000)]
        assert client.pending == 0


@pytest.mark.parametrize("direct", [True, False])
def test_callbacks_may_submit_and_wait(cluster: LocalCluster, direct: bool) -> None:
    with zdf.connect(cluster.master_addr, direct_results=direct) as client:
        chained: list[zdf.Future] = []
        errors: list[BaseException] = []

        def follow_up(future: concurrent.futures.Future[int]) -> None:
            chained.append(client.submit(examples.square, future.result()))

        client.submit(examples.square, 2).add_done_callback(follow_up)
        wait_until(lambda: chained, 10, "the follow-up task")
        assert chained[0].result(10) == 16

        if direct:
            return

        # Through the master, results are read by the I/O thread, which runs the callbacks:
        # waiting there for another task would never end, so it is refused at once.
        def blocks(future: concurrent.futures.Future[int]) -> None:
            try:
                client.submit(examples.square, 5).result(10)
            except ZdfError as exc:
                errors.append(exc)

        client.submit(examples.square, 3).add_done_callback(blocks)
        wait_until(lambda: errors, 10, "the refused wait")
        assert "I/O thread" in str(errors[0])


async def _await(future: zdf.Future) -> object:
    return await future


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


@pytest.mark.cluster(secure=False)  # the token check; secured, CURVE refuses them sooner
def test_spoofed_and_garbage_results_are_dropped(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        future = client.submit(examples.spin, 0.5)
        intruder = make_socket(zmq.PUSH, connect=client.reply_addr)
        try:
            spoof = {"results": [[future.tid, True, 1]], "token": "guess"}
            intruder.send_multipart([encode(Kind.EVENT, P.FN_RESULT, 0, spoof), *pack("spoofed")])
            intruder.send(b"\x00\xffgarbage")
            wait_until(lambda: client.dropped >= 2, 10, "both messages dropped")
        finally:
            intruder.close(0)
        assert isinstance(future.result(10), dict)  # the real result, not the spoofed one
        assert client.submit(examples.square, 4).result(10) == 16


@pytest.mark.cluster(executors=1, workers=1)
def test_context_manager_closes_cleanly(cluster: LocalCluster, tmp_path: Path) -> None:
    threads_before = threading.active_count()
    with zdf.connect(cluster.master_addr) as client:
        running = client.submit(examples.hold_once, str(tmp_path / "m"), 30)
        queued = client.submit(examples.square, 2)
    for future in (running, queued):
        with pytest.raises(ZdfError, match="closed"):
            future.result(1)
    with pytest.raises(ZdfError, match="closed"):
        client.submit(examples.square, 1)
    wait_until(lambda: threading.active_count() <= threads_before, 5, "the I/O thread to end")


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


def test_lone_tasks_go_straight_to_a_leased_worker(cluster: LocalCluster) -> None:
    status = cluster.client()

    def direct() -> int:
        return int(status.call(P.CLUSTER_STATUS)["functions"]["direct"])

    before = direct()
    with zdf.connect(cluster.master_addr) as client:
        assert client.leased_worker is None
        results = [client.submit(examples.square, i).result(10) for i in range(50)]
        assert results == [i * i for i in range(50)]
        assert client.leased_worker is not None
        # The first asked for the lease on its way through the master.
        wait_until(lambda: direct() - before >= 45, 10, "the workers' counts of leased tasks")


def test_killed_leased_worker_task_is_retried_through_the_master(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    with zdf.connect(cluster.master_addr) as client:
        client.submit(examples.noop).result(10)
        wait_until(lambda: client.leased_worker is not None, 10, "a lease")
        future = client.submit(examples.hold_once, str(marker), 60)
        os.kill(_worker_pid(marker), signal.SIGKILL)
        assert future.result(timeout=10) == "retried"
        assert client.pending == 0
        assert client.submit(examples.square, 3).result(10) == 9  # a new lease, or none yet
