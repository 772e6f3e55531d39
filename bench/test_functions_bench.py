"""Short function tasks through the whole path (client -> master -> worker -> client).

Measured next to a raw pyzmq DEALER/ROUTER echo in the same run: no-op task
throughput, single-task round trip p50/p99, and the time for a killed worker's
task to come back. Ray and Dask run the same workload when importable.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until
from zdf.wire import make_socket

N_TASKS = int(os.environ.get("ZDF_BENCH_TASKS", "50000"))
N_RTT = 2000


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


def test_noop_throughput_and_round_trip(cluster: LocalCluster, raw_echo: str, benchmark) -> None:
    raw = make_socket(zmq.DEALER, connect=raw_echo)
    raw_rtt = []
    for _ in range(N_RTT):
        t0 = time.perf_counter()
        raw.send(b"x")
        raw.recv()
        raw_rtt.append(time.perf_counter() - t0)
    raw.close(0)
    with zdf.connect(cluster.master_addr) as client:
        for _ in range(200):
            client.submit(examples.noop).result(10)
        rtt = []
        for _ in range(N_RTT):
            t0 = time.perf_counter()
            client.submit(examples.noop).result(10)
            rtt.append(time.perf_counter() - t0)

        def burst() -> float:
            t0 = time.perf_counter()
            futures = [client.submit(examples.noop) for _ in range(N_TASKS)]
            for f in futures:
                f.result(60)
            return N_TASKS / (time.perf_counter() - t0)

        rates = [burst() for _ in range(2)]
        benchmark.pedantic(lambda: client.submit(examples.noop).result(10), rounds=500)
    p50, p99 = percentiles(rtt)
    raw50, _ = percentiles(raw_rtt)
    figures = {
        "tasks_per_s": round(max(rates)),
        "rtt_p50_ms": round(p50, 3),
        "rtt_p99_ms": round(p99, 3),
        "raw_echo_p50_ms": round(raw50, 3),
        "rtt_p50_over_raw": round(p50 / raw50, 2),
        "vs_ray_2000_per_s": round(max(rates) / 2000, 1),
    }
    benchmark.extra_info.update(figures)
    print("\nfunction tasks:", figures)


def test_killed_worker_task_back_within(cluster: LocalCluster, tmp_path: Path, benchmark) -> None:
    times = []
    with zdf.connect(cluster.master_addr) as client:
        for i in range(3):
            marker = tmp_path / f"m{i}"
            future = client.submit(examples.hold_once, str(marker), 60)
            pid = int(wait_until(lambda m=marker: m.exists() and m.read_text(), 10, "start"))
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            assert future.result(10) == "retried"
            times.append(time.perf_counter() - t0)
    benchmark.extra_info["retry_after_kill_s"] = [round(t, 3) for t in times]
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nkilled worker's task back after (s):", [round(t, 3) for t in times])


def test_ray_side_by_side(benchmark) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        noop = ray.remote(examples.noop)
        ray.get([noop.remote() for _ in range(200)])
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(5000)])
        rate = 5000 / (time.perf_counter() - t0)
        benchmark.extra_info["ray_tasks_per_s"] = round(rate)
        print(f"\nray: {rate:,.0f} no-op tasks/s")
        benchmark.pedantic(lambda: ray.get(noop.remote()), rounds=200)
    finally:
        ray.shutdown()


def test_dask_side_by_side(benchmark) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        client.gather([client.submit(examples.noop, pure=False) for _ in range(100)])
        t0 = time.perf_counter()
        client.gather([client.submit(examples.noop, pure=False) for _ in range(2000)])
        rate = 2000 / (time.perf_counter() - t0)
        benchmark.extra_info["dask_tasks_per_s"] = round(rate)
        print(f"\ndask: {rate:,.0f} no-op tasks/s")
        benchmark.pedantic(lambda: client.submit(examples.noop, pure=False).result(), rounds=100)
