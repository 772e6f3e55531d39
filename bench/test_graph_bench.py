"""Task graphs: zdf next to Dask and Ray (where installed) in the same run.

- a chain of 1,000 dependent tasks (each adds 1 to its input): end to end;
- a tree reduction of 1,024 leaves, pairwise ``add`` (10 levels): end to end;
- 10,000 results of 100 KiB held on the workers, then released by the client:
  how long until every worker's RSS is back within 20 % of its level before;
- a 3-level graph whose intermediate results die with a killed executor
  (kill -9): how long from the kill to the correct final result.

The issue's goals (chain <= 0.5 s, tree <= 0.3 s, RSS back within 2 s) are
reported beside the figures, not asserted: the machine is shared and 2 cores;
only correctness is asserted. Every system gets 4 worker processes. The
module ends with one summary line of every figure.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

CHAIN = 1000
LEAVES = 1024
RELEASED = 10_000
RESULT_KIB = 100
ROUNDS = 5

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    print("\ntask graphs, this run:", FIGURES)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        str(tmp_path_factory.mktemp("graph")), executors=2, workers=2, log_level="warning"
    )
    try:
        yield local.start()
    finally:
        local.stop()


def chain(submit: Callable[..., Any], get: Callable[[Any], Any]) -> float:
    t0 = time.perf_counter()
    future = submit(examples.add, 0, 1)
    for _ in range(CHAIN - 1):
        future = submit(examples.add, future, 1)
    assert get(future) == CHAIN
    return time.perf_counter() - t0


def tree(submit: Callable[..., Any], get: Callable[[Any], Any]) -> float:
    t0 = time.perf_counter()
    level = [submit(examples.add, i, 0) for i in range(LEAVES)]
    while len(level) > 1:
        level = [submit(examples.add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
    assert get(level[0]) == LEAVES * (LEAVES - 1) // 2
    return time.perf_counter() - t0


def timed(name: str, run: Callable[[], float], benchmark: Any) -> None:
    run()  # warm up
    samples = [run() for _ in range(ROUNDS)]
    FIGURES[f"{name}_s"] = round(statistics.median(samples), 3)
    FIGURES[f"{name}_s_min"] = round(min(samples), 3)
    benchmark.extra_info[name] = samples
    print(f"\n{name}: median {statistics.median(samples):.3f} s, rounds {samples}")


def test_zdf_chain(cluster: LocalCluster, benchmark: Any) -> None:
    with zdf.connect(cluster.master_addr) as client:
        timed("zdf_chain", lambda: chain(client.submit, lambda f: f.result(60)), benchmark)
    benchmark.pedantic(lambda: None, rounds=1)


def test_zdf_tree(cluster: LocalCluster, benchmark: Any) -> None:
    with zdf.connect(cluster.master_addr) as client:
        timed("zdf_tree", lambda: tree(client.submit, lambda f: f.result(60)), benchmark)
    benchmark.pedantic(lambda: None, rounds=1)


def worker_pids(cluster: LocalCluster) -> list[int]:
    return [
        child.pid
        for executor in cluster.executors
        for child in psutil.Process(executor.pid).children()
        if "zdf.executor.worker" in " ".join(child.cmdline())
    ]


def rss(pids: list[int]) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


def test_zdf_released_results_give_memory_back(cluster: LocalCluster, benchmark: Any) -> None:
    pids = worker_pids(cluster)
    with zdf.connect(cluster.master_addr) as client:
        client.gather([client.submit(examples.noop) for _ in range(1000)])
        gc.collect()
        time.sleep(1.0)  # the warm-up's releases reach the workers
        before = rss(pids)
        held = [client.submit(examples.kib, RESULT_KIB) for _ in range(RELEASED)]
        for future in held:
            future.result(120)
        peak = rss(pids)
        t0 = time.perf_counter()
        del held, future
        gc.collect()

        def back() -> bool:
            now = rss(pids)
            return all(now[p] <= before[p] * 1.2 for p in pids)

        try:
            wait_until(back, 30, "the workers' memory to come back")
            took: float | None = time.perf_counter() - t0
        except TimeoutError:
            took = None
        after = rss(pids)
    mib = 1 << 20
    FIGURES["zdf_release_back_within_20pct_s"] = None if took is None else round(took, 3)
    FIGURES["zdf_release_rss_mib"] = {
        "before": [round(before[p] / mib) for p in pids],
        "peak": [round(peak[p] / mib) for p in pids],
        "after": [round(after[p] / mib) for p in pids],
    }
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nrelease:", FIGURES["zdf_release_back_within_20pct_s"], FIGURES["zdf_release_rss_mib"])
    assert sum(peak.values()) > sum(before.values()) + RELEASED * RESULT_KIB * 1024 // 2


def test_zdf_kill_recovery_of_a_three_level_graph(tmp_path: Any, benchmark: Any) -> None:
    times = []
    recomputed = []
    for i in range(3):
        with (
            LocalCluster(str(tmp_path / f"c{i}"), executors=2, workers=2) as local,
            zdf.connect(local.master_addr) as client,
        ):
            leaves = [client.submit(examples.ones, 100_000) for _ in range(16)]
            pairs = zip(leaves[::2], leaves[1::2], strict=True)
            mids = [client.submit(examples.add, a, b) for a, b in pairs]
            client.gather(mids)
            # The executor holding the first intermediate result (the task runs there).
            holder = psutil.Process(client.submit(examples.pid_of, mids[0]).result(10)).ppid()
            local.kill(next(c for c in local.executors if c.pid == holder))
            t0 = time.perf_counter()
            tops = [client.submit(examples.add, mids[j], mids[j + 1]) for j in range(0, 8, 2)]
            final = client.submit(sum, tops)
            np.testing.assert_array_equal(final.result(60), np.full(100_000, 16.0))
            times.append(time.perf_counter() - t0)
            recomputed.append(local.client().call("cluster_status")["functions"]["recomputed"])
    FIGURES["zdf_kill_recovery_s"] = [round(t, 3) for t in times]
    FIGURES["zdf_kill_recomputed_tasks"] = recomputed
    assert all(recomputed), "the killed executor held no intermediate result"
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nkill -9 recovery of a 3-level graph (s):", FIGURES["zdf_kill_recovery_s"])


def test_dask_side_by_side(benchmark: Any) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(n_workers=4, threads_per_worker=1, processes=True) as client:

        def submit(fn: Any, *args: Any) -> Any:
            return client.submit(fn, *args, pure=False)

        timed("dask_chain", lambda: chain(submit, lambda f: f.result()), benchmark)
        timed("dask_tree", lambda: tree(submit, lambda f: f.result()), benchmark)
    benchmark.pedantic(lambda: None, rounds=1)


def test_ray_side_by_side(benchmark: Any) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        add = ray.remote(examples.add)

        def submit(fn: Any, *args: Any) -> Any:
            return add.remote(*args)

        timed("ray_chain", lambda: chain(submit, ray.get), benchmark)
        timed("ray_tree", lambda: tree(submit, ray.get), benchmark)
    finally:
        ray.shutdown()
    benchmark.pedantic(lambda: None, rounds=1)
