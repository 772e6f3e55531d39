"""RPC round trip client -> master -> client, next to a raw pyzmq DEALER/ROUTER echo.

The cluster is secured (the default), so the echo is CURVE too (``curve_echo``):
both paths pay the same encryption. Both servers are separate processes on
loopback, measured in the same run; the ratio (goal <= 2x raw) is what to compare
across machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from zdf import protocol as P
from zdf.localcluster import LocalCluster
from zdf.wire import RpcClient

ROUNDS = 5000


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(str(tmp_path_factory.mktemp("rpc")), executors=0, log_level="warning")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _latencies(call: object, rounds: int = ROUNDS) -> np.ndarray:
    samples = np.empty(rounds)
    for i in range(rounds):
        t0 = time.perf_counter()
        call()  # type: ignore[operator]
        samples[i] = time.perf_counter() - t0
    return samples * 1e6


def raw_call(sock: zmq.Socket[bytes]) -> object:

    def call() -> None:
        sock.send(b"ping")
        sock.recv()

    call.sock = sock  # type: ignore[attr-defined]
    return call


def test_rpc_round_trip_vs_raw(
    master: LocalCluster, curve_echo: Callable[[], zmq.Socket[bytes]], benchmark, tmp_path: Path
) -> None:
    client = RpcClient(master.master_addr, timeout=5.0)
    raw = raw_call(curve_echo())
    for _ in range(500):  # warm both paths
        client.call(P.PING)
        raw()  # type: ignore[operator]
    raw_us = _latencies(raw)
    zdf_us = _latencies(lambda: client.call(P.PING))
    figures = {
        "raw_p50_us": float(np.percentile(raw_us, 50)),
        "raw_p99_us": float(np.percentile(raw_us, 99)),
        "zdf_p50_us": float(np.percentile(zdf_us, 50)),
        "zdf_p99_us": float(np.percentile(zdf_us, 99)),
    }
    figures["ratio_p50"] = figures["zdf_p50_us"] / figures["raw_p50_us"]
    benchmark.extra_info.update({k: round(v, 2) for k, v in figures.items()})
    benchmark(lambda: client.call(P.PING))
    print("\nRPC round trip:", {k: round(v, 2) for k, v in figures.items()})
    client.close()
