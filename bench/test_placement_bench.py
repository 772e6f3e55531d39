"""Does real work spread over the cluster? zdf next to Dask and Ray on the same work.

Three workloads, each reported as its makespan over the ideal one (1.0 is
perfect), in the same run for zdf, Dask (``distributed.LocalCluster`` with
processes) and Ray where they are installed (``make bench`` installs them):

- 8 x ``time.sleep(0.5)`` on 4 worker processes (ideal 1.0 s; on one, 4.0 s);
  three rounds: the first one is of a function zdf has not seen yet.
- 1 task of 3 s, then 40 tasks of 50 ms on 4 workers: the time until the 40 are
  done, from their submission (ideal 40 x 0.05 / 3 = 0.67 s on the other three).
- 200 CPU-bound tasks of 20 ms on 2 executors x 1 worker and on 1 x 1: the
  speed-up (ideal 2.0 on 2 cores; the machine may be shared, so it is reported,
  not asserted).

The no-op throughput and the lone-task round trip are in
``test_functions_bench.py``. The module ends with one line of every figure.
Only what noise cannot break is asserted: a burst of sleeps that ran on one
worker would take twice the bound.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster

Submit = Callable[..., Any]  # (fn, *args) -> a handle
Wait = Callable[[list[Any]], Any]  # waits for every handle

SLEEP_ROUNDS = 3
N_SHORT = 40
N_SPIN = 200
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    print("\nplacement, this run (makespan / ideal; 1.0 is perfect):", FIGURES)


def sleep_burst(submit: Submit, wait: Wait) -> list[float]:
    """Makespans of 8 x sleep(0.5), ``SLEEP_ROUNDS`` times."""
    times = []
    for _ in range(SLEEP_ROUNDS):
        t0 = time.perf_counter()
        wait([submit(time.sleep, 0.5) for _ in range(8)])
        times.append(time.perf_counter() - t0)
    return times


def short_after_long(submit: Submit, wait: Wait) -> float:
    """Seconds until 40 x sleep(0.05) submitted after a 3 s task are all done."""
    long = submit(examples.hold, 3.0)
    t0 = time.perf_counter()
    wait([submit(time.sleep, 0.05) for _ in range(N_SHORT)])
    elapsed = time.perf_counter() - t0
    wait([long])
    return elapsed


def cpu_burst(submit: Submit, wait: Wait) -> float:
    t0 = time.perf_counter()
    wait([submit(examples.spin, 0.02) for _ in range(N_SPIN)])
    return time.perf_counter() - t0


def record(name: str, sleeps: list[float], short: float | None, speedup: float | None) -> None:
    figures: dict[str, Any] = {
        f"{name}_sleep_burst_s": [round(t, 3) for t in sleeps],
        f"{name}_sleep_burst_over_ideal": round(statistics.median(sleeps) / 1.0, 2),
    }
    if short is not None:
        figures[f"{name}_short_after_long_s"] = round(short, 3)
        figures[f"{name}_short_after_long_over_ideal"] = round(short / (N_SHORT * 0.05 / 3), 2)
    if speedup is not None:
        figures[f"{name}_cpu_speedup_2_over_1"] = round(speedup, 2)
    FIGURES.update(figures)
    print(f"\n{name}:", figures)


def start(tmp: Any, executors: int, workers: int) -> LocalCluster:
    return LocalCluster(
        str(tmp.mktemp("placement")), executors=executors, workers=workers, log_level="warning"
    ).start()


def zdf_on(cluster: LocalCluster, work: Callable[[Submit, Wait], Any]) -> Any:
    with zdf.connect(cluster.master_addr) as client:
        return work(client.submit, lambda fs: [f.result(120) for f in fs])


def test_zdf(tmp_path_factory: pytest.TempPathFactory, benchmark: Any) -> None:
    clusters = []
    try:
        four = start(tmp_path_factory, 2, 2)
        clusters.append(four)
        sleeps = zdf_on(four, sleep_burst)
        short = zdf_on(four, short_after_long)
        four.stop()
        two = start(tmp_path_factory, 2, 1)
        clusters.append(two)
        one = start(tmp_path_factory, 1, 1)
        clusters.append(one)
        zdf_on(two, lambda s, w: w([s(examples.spin, 0.001) for _ in range(20)]))  # learn
        zdf_on(one, lambda s, w: w([s(examples.spin, 0.001) for _ in range(20)]))
        # Interleaved, so that both see the same load on a shared machine.
        on_two, on_one = [], []
        for _ in range(2):
            on_two.append(zdf_on(two, cpu_burst))
            on_one.append(zdf_on(one, cpu_burst))
        record("zdf", sleeps, short, min(on_one) / min(on_two))
        benchmark.pedantic(lambda: None, rounds=1)
    finally:
        for cluster in clusters:
            cluster.stop()
    assert statistics.median(sleeps) < 2.0, f"8 sleeps of 0.5 s on 4 workers took {sleeps}"
    assert short < 2.5, f"40 short tasks behind a long one took {short:.2f} s"


def test_dask(benchmark: Any) -> None:
    distributed = pytest.importorskip("distributed")

    def run(workers: int, work: Callable[[Submit, Wait], Any]) -> Any:
        with (
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.gather([client.submit(examples.noop, pure=False) for _ in range(workers * 4)])

            def submit(fn: Any, *args: Any) -> Any:
                return client.submit(fn, *args, pure=False)

            return work(submit, client.gather)

    sleeps = run(4, sleep_burst)
    short = run(4, short_after_long)
    speedup = run(1, cpu_burst) / run(2, cpu_burst)
    record("dask", sleeps, short, speedup)
    benchmark.pedantic(lambda: None, rounds=1)


def test_ray(benchmark: Any) -> None:
    ray = pytest.importorskip("ray")

    def run(cpus: int, work: Callable[[Submit, Wait], Any]) -> Any:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            remote: dict[Any, Any] = {}

            def submit(fn: Any, *args: Any) -> Any:
                if fn not in remote:
                    # ray.remote takes no builtin: hold() is time.sleep in a function.
                    remote[fn] = ray.remote(examples.hold if fn is time.sleep else fn)
                return remote[fn].remote(*args)

            ray.get([submit(examples.noop) for _ in range(cpus * 4)])
            return work(submit, ray.get)
        finally:
            ray.shutdown()

    sleeps = run(4, sleep_burst)
    short = run(4, short_after_long)
    speedup = run(1, cpu_burst) / run(2, cpu_burst)
    record("ray", sleeps, short, speedup)
    benchmark.pedantic(lambda: None, rounds=1)
