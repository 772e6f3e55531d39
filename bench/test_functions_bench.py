"""Short function tasks through the whole path, next to a raw pyzmq echo.

Measured next to a raw pyzmq DEALER/ROUTER echo in the same run, encrypted
with CURVE as the cluster's sockets are (secured by default): no-op task
throughput (a burst: client -> master -> workers -> client), single-task round
trip p50/p99 (``submit(...).result()`` one after another: after the first, which
brings the client a lease, client -> leased worker -> client), and the time for
a killed worker's task to come back. Ray and Dask run the same workload when importable, and the
module ends with one summary line of every figure and the ratios, all from
this run (the machine may be shared: compare ratios, not absolute figures).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import zdf
from zdf import protocol as P
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

N_TASKS = int(os.environ.get("ZDF_BENCH_TASKS", "50000"))
N_RTT = 2000
N_OTHER_TASKS = 5000  # Ray and Dask are two orders of magnitude slower
N_OTHER_RTT = 300

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    """Print every figure of this run with the ratios, once all tests have run."""
    yield
    f = FIGURES
    for other in ("ray", "dask"):
        if f"{other}_tasks_per_s" in f and "tasks_per_s" in f:
            f[f"tasks_per_s_over_{other}"] = round(f["tasks_per_s"] / f[f"{other}_tasks_per_s"], 1)
        if f"{other}_rtt_p50_ms" in f and "rtt_p50_ms" in f:
            f[f"{other}_rtt_p50_over_zdf"] = round(f[f"{other}_rtt_p50_ms"] / f["rtt_p50_ms"], 1)
    print("\nfunction tasks, this run:", f)


def round_trips(call: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        str(tmp_path_factory.mktemp("fn")), executors=1, workers=2, log_level="warning"
    )
    try:
        yield local.start()
    finally:
        local.stop()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def test_noop_throughput_and_round_trip(
    cluster: LocalCluster, curve_echo: Callable[[], zmq.Socket[bytes]], benchmark
) -> None:
    raw = curve_echo()  # encrypted, as the cluster's path is: the fair floor

    def echo() -> None:
        raw.send(b"x")
        raw.recv()

    with zdf.connect(cluster.master_addr) as client:
        for _ in range(200):
            client.submit(examples.noop).result(10)
        round_trips(echo, 200)
        # Interleaved in slices, so that both see the same load on a shared machine.
        rtt: list[float] = []
        raw_rtt: list[float] = []
        for _ in range(10):
            raw_rtt += round_trips(echo, N_RTT // 10)
            rtt += round_trips(lambda: client.submit(examples.noop).result(10), N_RTT // 10)

        def burst() -> float:
            t0 = time.perf_counter()
            futures = [client.submit(examples.noop) for _ in range(N_TASKS)]
            for f in futures:
                f.result(60)
            return N_TASKS / (time.perf_counter() - t0)

        rates = [burst() for _ in range(2)]
        benchmark.pedantic(lambda: client.submit(examples.noop).result(10), rounds=500)
    p50, p99 = percentiles(rtt)
    raw50, raw99 = percentiles(raw_rtt)
    figures = {
        "tasks_per_s": round(max(rates)),
        "rtt_p50_ms": round(p50, 3),
        "rtt_p99_ms": round(p99, 3),
        "raw_curve_echo_p50_ms": round(raw50, 3),
        "raw_curve_echo_p99_ms": round(raw99, 3),
        "rtt_p50_over_raw": round(p50 / raw50, 2),
    }
    FIGURES.update(figures)
    benchmark.extra_info.update(figures)
    print("\nfunction tasks:", figures)


def test_killed_worker_task_back_within(cluster: LocalCluster, tmp_path: Path, benchmark) -> None:
    times = []
    status = cluster.client()

    def workers_ready() -> bool:
        return bool(status.call(P.CLUSTER_STATUS)["functions"]["workers"] == 2)

    with zdf.connect(cluster.master_addr) as client:
        for i in range(5):
            # A healthy cluster loses one worker: the one killed last time is back.
            wait_until(workers_ready, 30, "both workers to take function tasks")
            marker = tmp_path / f"m{i}"
            future = client.submit(examples.hold_once, str(marker), 60)
            pid = int(wait_until(lambda m=marker: m.exists() and m.read_text(), 10, "start"))
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            assert future.result(10) == "retried"
            times.append(time.perf_counter() - t0)
    benchmark.extra_info["retry_after_kill_s"] = [round(t, 3) for t in times]
    FIGURES["retry_after_kill_s"] = [round(t, 3) for t in times]
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nkilled worker's task back after (s):", [round(t, 3) for t in times])


def test_ray_side_by_side(benchmark) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        noop = ray.remote(examples.noop)
        ray.get([noop.remote() for _ in range(200)])
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(N_OTHER_TASKS)])
        rate = N_OTHER_TASKS / (time.perf_counter() - t0)
        p50, p99 = percentiles(round_trips(lambda: ray.get(noop.remote()), N_OTHER_RTT))
        record("ray", rate, p50, p99, benchmark)
        benchmark.pedantic(lambda: ray.get(noop.remote()), rounds=50)
    finally:
        ray.shutdown()


def test_dask_side_by_side(benchmark) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        client.gather([client.submit(examples.noop, pure=False) for _ in range(100)])
        t0 = time.perf_counter()
        client.gather([client.submit(examples.noop, pure=False) for _ in range(N_OTHER_TASKS)])
        rate = N_OTHER_TASKS / (time.perf_counter() - t0)
        one = lambda: client.submit(examples.noop, pure=False).result()  # noqa: E731
        p50, p99 = percentiles(round_trips(one, N_OTHER_RTT))
        record("dask", rate, p50, p99, benchmark)
        benchmark.pedantic(one, rounds=50)


def record(name: str, rate: float, p50: float, p99: float, benchmark: Any) -> None:
    figures = {
        f"{name}_tasks_per_s": round(rate),
        f"{name}_rtt_p50_ms": round(p50, 3),
        f"{name}_rtt_p99_ms": round(p99, 3),
    }
    FIGURES.update(figures)
    benchmark.extra_info.update(figures)
    print(f"\n{name}:", figures)
