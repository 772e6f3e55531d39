"""Big values: a 256 MiB numpy array client -> worker -> client, and worker -> worker
across two executors, next to raw pyzmq.

Each round sends the array to a task that returns it (``examples.echo``), so
2 x 256 MiB cross the wire per round; the rate is those bytes over the round's
time. Measured in the same run:

* raw pyzmq: the same bytes as one message to a ROUTER echo in another process
  and back (no limit on the message size, no chunks, no security): the floor;
* zdf unsecured (protected mode, loopback), through the master (a task with
  options always goes there: two hops out) and under a lease (straight to the
  worker: one hop), A and B interleaved round by round;
* zdf secured (``LocalCluster``'s default: CURVE on every tcp socket), lease path;
* Dask and Ray, where installed, the same echo.

The client's RSS is sampled every few ms during each zdf round: its growth
over the level before the round, less the result array the round brings, is
what the transfer itself costs the client (goal < 50 MiB). The machine may be
shared: compare ratios, not absolute figures; only the RSS bound is asserted.

Worker to worker (``test_zdf_worker_to_worker`` and the ``*_w2w`` rows): a task
on executor ``left`` makes a fresh 256 MiB array (``examples.block``), a task on
executor ``right`` takes it (``examples.length``); the round is the consumer's,
from its submit to its (tiny) result, so the rate is SIZE over it. A third
executor, ``far``, has ``ZDF_SHM_HANDOFF=0``: it takes the same value over the
secured network path, as between hosts, in turns with ``right`` (which takes it
through shared memory, ``zdf.executor.shmhandoff``). The client's RSS growth is
sampled during each consumer's round; the producer's result reaches the client
before them (every result does), so that is reported apart
(``zdf_w2w_producer_rss_growth_mib``). Ray (plasma, shared memory on one node)
and Dask (two worker processes, tcp) do the same.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import zmq

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

SIZE = int(os.environ.get("ZDF_BENCH_VALUE_BYTES", str(256 << 20)))
ROUNDS = int(os.environ.get("ZDF_BENCH_VALUE_ROUNDS", "4"))
MiB = 1 << 20

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    f = FIGURES
    raw = f.get("raw_gb_per_s")
    if raw:
        for name in list(f):
            if name.endswith("_gb_per_s") and name != "raw_gb_per_s":
                f[name.replace("_gb_per_s", "_over_raw")] = round(f[name] / raw, 2)
    f["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print("\nbig values, this run:", f)


@pytest.fixture(scope="module")
def array() -> np.ndarray[Any, Any]:
    return np.random.default_rng(7).random(SIZE // 8)


class PeakRss:
    """The highest RSS of this process while in the ``with`` block (sampled)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.before = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


def rate(seconds: list[float]) -> float:
    """GB/s of the median round (2 x SIZE bytes a round)."""
    return round(2 * SIZE / float(np.median(seconds)) / 1e9, 3)


def timed_round(call: Callable[[], Any], check: np.ndarray[Any, Any]) -> tuple[float, int]:
    """Seconds of one round, and the client's RSS growth beyond the result."""
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - t0
    assert out.shape == check.shape and out[-1] == check[-1]
    del out
    return seconds, rss.growth - SIZE


def test_raw_pyzmq_baseline(raw_echo: str, array: np.ndarray[Any, Any], benchmark: Any) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(raw_echo)
    try:

        def echo() -> Any:
            sock.send(array, copy=False)
            return np.frombuffer(sock.recv(copy=False).buffer, dtype=array.dtype)

        times = [timed_round(echo, array)[0] for _ in range(ROUNDS)]
    finally:
        sock.close()
    FIGURES["raw_gb_per_s"] = rate(times)
    benchmark.extra_info.update(FIGURES)
    benchmark.pedantic(lambda: None, rounds=1)


def zdf_rounds(secure: bool, array: np.ndarray[Any, Any], tmp: str) -> dict[str, Any]:
    local = LocalCluster(tmp, executors=1, workers=1, log_level="warning", secure=secure)
    local.start()
    try:
        with zdf.connect(local.master_addr) as client:
            via_master = client.options(name="echo-via-master")
            client.submit(examples.echo, 1).result(30)  # the lease for the lone path
            wait_until(lambda: client.leased_worker, 30, "a lease")
            lease: list[float] = []
            master: list[float] = []
            growth: list[int] = []
            for _ in range(ROUNDS if not secure else max(1, ROUNDS // 2)):
                seconds, grew = timed_round(
                    lambda: client.submit(examples.echo, array).result(300), array
                )
                lease.append(seconds)
                growth.append(grew)
                if not secure:  # interleaved with the lease path, round by round
                    seconds, grew = timed_round(
                        lambda: via_master.submit(examples.echo, array).result(300), array
                    )
                    master.append(seconds)
                    growth.append(grew)
    finally:
        local.stop()
    name = "secured" if secure else "zdf"
    figures: dict[str, Any] = {f"{name}_lease_gb_per_s": rate(lease)}
    if master:
        figures[f"{name}_via_master_gb_per_s"] = rate(master)
    figures[f"{name}_client_rss_growth_mib"] = round(max(growth) / MiB, 1)
    return figures


@pytest.mark.parametrize("secure", [False, True], ids=["protected-mode", "curve"])
def test_zdf(
    secure: bool,
    array: np.ndarray[Any, Any],
    tmp_path_factory: pytest.TempPathFactory,
    benchmark: Any,
) -> None:
    figures = zdf_rounds(secure, array, str(tmp_path_factory.mktemp("values")))
    FIGURES.update(figures)
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nzdf:", figures)
    growth = figures["secured_client_rss_growth_mib" if secure else "zdf_client_rss_growth_mib"]
    # The goal is 50 MiB beyond the result array (seen: 16-48 in four runs); the bound
    # asserted leaves the sampling's noise room, and still fails the 110-135 MiB of
    # chunks a client piled up before its result socket was bounded.
    assert growth < 64


def labelled_cluster(base_dir: str) -> LocalCluster:
    """Executors ``left``, ``right`` and ``far``, one worker each (tasks pinned by
    resources); ``far``'s worker has the shared-memory handoff off."""
    local = LocalCluster(base_dir, executors=0, workers=1, log_level="warning")
    try:
        local.start()
        for label in ("left", "right", "far"):
            local.resources = {label: 1}
            if label == "far":
                local.env["ZDF_SHM_HANDOFF"] = "0"
            local.start_executor()
        local.wait_ready()
        with zdf.connect(local.master_addr) as client:  # each one's resources are known
            for label in ("left", "right", "far"):
                pinned = client.options(resources={label: 1})
                wait_until(lambda p=pinned: p.submit(examples.noop).exception(30) is None, 30)
    except BaseException:
        local.stop()
        raise
    return local


def test_zdf_worker_to_worker(tmp_path_factory: pytest.TempPathFactory, benchmark: Any) -> None:
    local = labelled_cluster(str(tmp_path_factory.mktemp("w2w")))
    rounds: dict[str, list[float]] = {"right": [], "far": []}
    growth: dict[str, list[int]] = {"right": [], "far": []}
    made_growth: list[int] = []
    try:
        with zdf.connect(local.master_addr) as client:
            views = {label: client.options(resources={label: 1}) for label in ("left", *rounds)}
            for i in range(ROUNDS + 1):  # the first is a warm-up, not counted
                with PeakRss() as rss:
                    made = views["left"].submit(examples.block, i, SIZE)
                    made.result(300)
                made_growth.append(rss.growth - SIZE)
                # Both consumers take the same value, in turns, first one then the other.
                for label in list(rounds) if i % 2 else list(rounds)[::-1]:
                    with PeakRss() as rss:
                        t0 = time.perf_counter()
                        taken = views[label].submit(examples.length, made).result(300)
                        rounds[label].append(time.perf_counter() - t0)
                    assert taken == SIZE // 8
                    growth[label].append(rss.growth)
                made.release()
                del made
            counts = {
                label: views[label].submit(examples.fetch_counts).result(30) for label in rounds
            }
    finally:
        local.stop()
    figures: dict[str, Any] = {}
    for label, name in (("right", "shm"), ("far", "net")):
        times = rounds[label][1:]
        figures[f"zdf_w2w_{name}_gb_per_s"] = round(SIZE / float(np.median(times)) / 1e9, 3)
        figures[f"zdf_w2w_{name}_rounds_s"] = [round(t, 3) for t in times]
        figures[f"zdf_w2w_{name}_client_rss_growth_mib"] = round(max(growth[label][1:]) / MiB, 1)
    figures["zdf_w2w_producer_rss_growth_mib"] = round(max(made_growth[1:]) / MiB, 1)
    figures["zdf_w2w_shm_fetches"] = counts["right"]["shm_fetched"]
    FIGURES.update(figures)
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1)
    print("\nzdf worker to worker:", figures)
    assert counts["right"]["shm_fetched"] >= ROUNDS and counts["far"]["shm_fetched"] == 0


def test_ray_worker_to_worker(benchmark: Any) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        block, length = ray.remote(examples.block), ray.remote(examples.length)
        rounds = []
        for i in range(ROUNDS + 1):
            made = block.remote(i, SIZE)
            ray.wait([made], timeout=300)
            t0 = time.perf_counter()
            assert ray.get(length.remote(made)) == SIZE // 8
            rounds.append(time.perf_counter() - t0)
            del made
    finally:
        ray.shutdown()
    FIGURES["ray_w2w_gb_per_s"] = round(SIZE / float(np.median(rounds[1:])) / 1e9, 3)
    benchmark.extra_info.update(FIGURES)
    benchmark.pedantic(lambda: None, rounds=1)


def test_dask_worker_to_worker(benchmark: Any) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True) as client:
        left, right = list(client.scheduler_info()["workers"])[:2]
        rounds = []
        for i in range(ROUNDS + 1):
            made = client.submit(examples.block, i, SIZE, workers=[left], pure=False)
            distributed.wait([made], timeout=300)
            t0 = time.perf_counter()
            got = client.submit(examples.length, made, workers=[right], pure=False).result()
            assert got == SIZE // 8
            rounds.append(time.perf_counter() - t0)
            del made
    FIGURES["dask_w2w_gb_per_s"] = round(SIZE / float(np.median(rounds[1:])) / 1e9, 3)
    benchmark.extra_info.update(FIGURES)
    benchmark.pedantic(lambda: None, rounds=1)


def test_dask_side_by_side(array: np.ndarray[Any, Any], benchmark: Any) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(n_workers=1, threads_per_worker=1, processes=True) as client:
        client.submit(examples.echo, 1, pure=False).result()
        times = [
            timed_round(lambda: client.submit(examples.echo, array, pure=False).result(), array)[0]
            for _ in range(ROUNDS)
        ]
    FIGURES["dask_gb_per_s"] = rate(times)
    benchmark.extra_info.update(FIGURES)
    benchmark.pedantic(lambda: None, rounds=1)


def test_ray_side_by_side(array: np.ndarray[Any, Any], benchmark: Any) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        echo = ray.remote(examples.echo)
        ray.get(echo.remote(1))
        times = [timed_round(lambda: ray.get(echo.remote(array)), array)[0] for _ in range(ROUNDS)]
    finally:
        ray.shutdown()
    FIGURES["ray_gb_per_s"] = rate(times)
    benchmark.extra_info.update(FIGURES)
    benchmark.pedantic(lambda: None, rounds=1)
