"""What CURVE costs: the same workloads on a secured and an unsecured cluster, same run.

Rounds alternate secured and unsecured clusters (A B A B ...), each started
afresh, so that both see the same load on a shared machine; the figures are the
median over the rounds of each, and the ratios secured / unsecured are what to
read (issue 15's goals: records/s >= 0.8x, round trip p50 <= 1.2x, no-op
tasks/s >= 0.8x, metastore write p50 <= 1.2x). Nothing is asserted: on a shared
two-core machine the noise is larger than some of the differences.

On one host the workers' data pipes are ipc:// (no CURVE: they never leave the
host), so the bench job row measures the control plane's share; the
``tcp_pipe`` rows send the same batches over a tcp:// pipe, secured and not.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import zdf
from zdf.jobs import examples
from zdf.jobs.benchrun import start_bench
from zdf.localcluster import LocalCluster
from zdf.metastore.client import MetaClient
from zdf.wire import make_socket, security
from zdf.wire.sockets import close_socket, free_port

ROUNDS = int(os.environ.get("ZDF_BENCH_SECURITY_ROUNDS", "3"))
N_RTT = 1000
N_TASKS = 20_000
N_PUTS = 1000
PIPE_BATCHES = 2000
PIPE_BATCH_BYTES = 64 * 1024


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.array(samples) * 1e3, 50))


def measure(cluster: LocalCluster, sink_dir: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with zdf.connect(cluster.master_addr) as client:
        for _ in range(200):  # warm: imports, the lease
            client.submit(examples.noop).result(10)
        rtt = []
        for _ in range(N_RTT):
            t0 = time.perf_counter()
            client.submit(examples.noop).result(10)
            rtt.append(time.perf_counter() - t0)
        out["fn_rtt_p50_ms"] = p50_ms(rtt)
        t0 = time.perf_counter()
        futures = [client.submit(examples.noop) for _ in range(N_TASKS)]
        for f in futures:
            f.result(60)
        out["noop_tasks_per_s"] = N_TASKS / (time.perf_counter() - t0)
    with MetaClient(cluster.meta_addrs, timeout=5.0) as meta:
        puts = []
        for i in range(N_PUTS):
            t0 = time.perf_counter()
            meta.put(f"/app/bench/{i % 64}", b"x" * 100)
            puts.append(time.perf_counter() - t0)
        out["meta_put_p50_ms"] = p50_ms(puts)
    run = start_bench(cluster, sink_dir, rate=0, **{"rcd-cnt": 50_000, "table-num": 4})
    t0 = time.perf_counter()
    job = run.wait_end(120)
    assert job["state"] == "finished", job.get("error")
    out["bench_job_records_per_s"] = run.expected / (time.perf_counter() - t0)
    return out


def tcp_pipe_mb_per_s() -> float:
    """Batches one way over a tcp:// PUSH/PULL made by make_socket (CURVE when keys are
    installed), as a data pipe between hosts would carry them."""
    addr = f"127.0.0.1:{free_port()}"
    pull = make_socket(zmq.PULL, bind=addr, rcvhwm=64)
    push = make_socket(zmq.PUSH, connect=addr, sndhwm=64)
    payload = b"\x01" * PIPE_BATCH_BYTES

    def drain() -> None:
        for _ in range(PIPE_BATCHES):
            pull.recv(copy=False)

    reader = threading.Thread(target=drain)
    try:
        push.send(payload)
        pull.recv()
        reader.start()
        t0 = time.perf_counter()
        for _ in range(PIPE_BATCHES):
            push.send(payload, copy=False)
        reader.join(60)
        return PIPE_BATCHES * PIPE_BATCH_BYTES / (time.perf_counter() - t0) / 1e6
    finally:
        close_socket(push)
        close_socket(pull)


@pytest.mark.timeout(1800)
def test_secured_vs_unsecured(benchmark: Any) -> None:
    rows: dict[str, list[dict[str, float]]] = {"secured": [], "unsecured": []}
    # Short folders of equal length: a task binds ipc:// only when its socket path fits
    # (107 bytes), so a longer name alone could move one mode's pipes to tcp.
    top = Path(tempfile.mkdtemp(prefix="zsec-"))
    for r in range(ROUNDS):
        for mode in ("secured", "unsecured"):
            base = top / f"{mode[0]}{r}"
            cluster = LocalCluster(
                str(base), executors=2, workers=2, log_level="warning", secure=mode == "secured"
            )
            try:
                cluster.start()
                figures = measure(cluster, str(base / "sink"))
                figures["tcp_pipe_mb_per_s"] = tcp_pipe_mb_per_s()
                assert (security.current() is not None) == (mode == "secured")
            finally:
                cluster.stop()
            rows[mode].append(figures)
            print(mode, {k: round(v, 3) for k, v in figures.items()})
    shutil.rmtree(top, ignore_errors=True)
    result: dict[str, Any] = {}
    for mode, runs in rows.items():
        for name in runs[0]:
            result[f"{mode}_{name}"] = round(statistics.median(r[name] for r in runs), 3)
    for name in rows["secured"][0]:
        result[f"ratio_{name}"] = round(result[f"secured_{name}"] / result[f"unsecured_{name}"], 3)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nsecurity, {ROUNDS} rounds each, medians, this run:")
    for key, value in sorted(result.items()):
        print(f"  {key}: {value}")
