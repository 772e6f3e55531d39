"""Metastore benchmarks: one replica, a 3-replica cluster, and etcd 3.4 next to it.

Rows (all on loopback, on this machine, in this run):

- synced write latency p50/p99 from one client;
- writes/s and p50 with 16 concurrent clients (group commit shares the fsyncs),
  and the CPU of every server process and of the client threads per write
  meanwhile (each client waits for its reply, so on two cores the rate is at
  most 2 / that CPU);
- writes/s with 48 concurrent clients: what the servers do when the clients
  leave them no idle time;
- linearizable read p50;
- leader-kill recovery: from SIGKILL of the leader until a write succeeds.

Where ``etcd`` is installed (Debian package etcd-server), a 3-member etcd runs
the same workload through its HTTP/JSON gateway from the same Python client
threads, and the report gives zdf/etcd ratios; without it those rows are
skipped. The figures are printed as a table at the end of the module.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreCluster, MetastoreProcess
from zdf.wire.sockets import free_port

WRITES = 1000
READS = 2000
CONCURRENT = 16
MANY = 48
CONCURRENT_SECONDS = 5.0
RESULTS: dict[str, dict[str, float]] = {}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- workloads (a "client" is a callable per thread) ---------------------------------------
Put = Callable[[str, str], object]
Get = Callable[[str], object]


def latency(op: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        op(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of these processes and of this one (the client threads)."""
    total = 0.0
    for proc in [psutil.Process(pid) for pid in pids] + [psutil.Process()]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def concurrent_writes(
    make_put: Callable[[], Put], seconds: float, clients: int = CONCURRENT
) -> tuple[float, float]:
    samples: list[list[float]] = [[] for _ in range(clients)]
    start_line = threading.Barrier(clients + 1)
    end = [0.0]

    def run(n: int) -> None:
        put = make_put()
        start_line.wait()
        i = 0
        while time.monotonic() < end[0]:
            t = time.perf_counter()
            put(f"bench/c{n}/{i % 100}", "x" * 100)
            samples[n].append((time.perf_counter() - t) * 1000)
            i += 1

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    end[0] = time.monotonic() + seconds
    start_line.wait()
    for t in threads:
        t.join(seconds + 30)
    flat = [s for per in samples for s in per]
    return len(flat) / seconds, statistics.median(flat)


def record(
    system: str, put: Put, get: Get, make_put: Callable[[], Put], server_pids: list[int]
) -> None:
    put("bench/warm", "up")
    writes = latency(lambda i: put(f"bench/w{i % 100}", "x" * 100), WRITES)
    reads = latency(lambda i: get(f"bench/w{i % 100}"), READS)
    cpu_before = cpu_seconds(server_pids)
    rate, concurrent_p50 = concurrent_writes(make_put, CONCURRENT_SECONDS)
    cpu = cpu_seconds(server_pids) - cpu_before
    many, _ = concurrent_writes(make_put, CONCURRENT_SECONDS, MANY)
    RESULTS.setdefault(system, {}).update(
        {
            "write_p50_ms": percentile(writes, 0.5),
            "write_p99_ms": percentile(writes, 0.99),
            "writes_per_s_16": rate,
            "write_p50_16_ms": concurrent_p50,
            "cpu_us_per_write_16": 1e6 * cpu / (rate * CONCURRENT_SECONDS),
            "writes_per_s_48": many,
            "read_p50_ms": percentile(reads, 0.5),
        }
    )


# -- zdf ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetastoreProcess]:
    base = tmp_path_factory.mktemp("metastore-bench")
    server = MetastoreProcess(str(base / "data"), log_path=str(base / "meta.log"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def meta(single: MetastoreProcess) -> Iterator[MetaClient]:
    with MetaClient(single.addr, timeout=10.0) as client:
        yield client


def test_put_latency_synced(benchmark, meta: MetaClient) -> None:  # type: ignore[no-untyped-def]
    value = b"x" * 100
    revision = benchmark(meta.put, "bench/put", value)
    assert revision > 0


def test_get_latency(benchmark, meta: MetaClient) -> None:  # type: ignore[no-untyped-def]
    meta.put("bench/get", b"y" * 100)
    kv = benchmark(meta.get, "bench/get")
    assert kv is not None and kv.value == b"y" * 100


def zdf_rows(endpoints: list[str], system: str, pids: list[int]) -> None:
    clients: list[MetaClient] = []

    def make_put() -> Put:
        client = MetaClient(endpoints, timeout=10.0)
        clients.append(client)
        return client.put

    try:
        main = MetaClient(endpoints, timeout=10.0)
        clients.append(main)
        record(system, main.put, main.get, make_put, pids)
    finally:
        for client in clients:
            client.close()


def test_single_replica_rows(single: MetastoreProcess) -> None:
    assert single.pid is not None
    zdf_rows([single.addr], "zdf x1", [single.pid])


def test_three_replica_rows(tmp_path: Path) -> None:
    with MetastoreCluster(str(tmp_path), 3) as cluster:
        cluster.leader()
        zdf_rows(cluster.endpoints, "zdf x3", [m.pid for m in cluster.members if m.pid])
        recoveries = []
        with MetaClient(cluster.endpoints, timeout=10.0, attempt_timeout=0.2) as client:
            for _ in range(5):
                client.put("bench/kill", "before")
                leader = cluster.leader()
                leader.kill()
                start = time.monotonic()
                client.put("bench/kill", "after")
                recoveries.append(time.monotonic() - start)
                leader.start()
                cluster.leader()
        RESULTS["zdf x3"]["leader_kill_recovery_s"] = statistics.median(recoveries)


# -- etcd -----------------------------------------------------------------------------------
class EtcdCluster:
    def __init__(self, base: Path) -> None:
        self.names = ["e1", "e2", "e3"]
        self.client_ports = {n: free_port() for n in self.names}
        self.peer_ports = {n: free_port() for n in self.names}
        self.base = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_member(self, name: str) -> None:
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        client = f"http://127.0.0.1:{self.client_ports[name]}"
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        data = self.base / name
        state = "existing" if data.exists() else "new"
        args = [
            "etcd",
            f"--name={name}",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=zdf-bench",
        ]
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def endpoint(self, name: str) -> tuple[str, int]:
        return "127.0.0.1", self.client_ports[name]

    def leader(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in self.names:
                proc = self.procs.get(name)
                if proc is None or proc.poll() is not None:
                    continue
                try:
                    status = EtcdClient(self.endpoint(name)).call("/v3/maintenance/status", {})
                except OSError:
                    continue
                if status.get("leader") and status.get("leader") == status["header"]["member_id"]:
                    return name
            time.sleep(0.05)
        raise RuntimeError("etcd elected no leader")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


class EtcdClient:
    """etcd v3 through its JSON gateway, on one keep-alive connection."""

    def __init__(self, endpoint: tuple[str, int], timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection(*endpoint, timeout=timeout)

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        reply = self.conn.getresponse()
        data: dict[str, object] = json.loads(reply.read())
        return data

    def put(self, key: str, value: str) -> object:
        return self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get(self, key: str) -> object:
        return self.call("/v3/kv/range", {"key": _b64(key)})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_etcd_rows(tmp_path: Path) -> None:
    etcd = EtcdCluster(tmp_path)
    try:
        for name in etcd.names:
            etcd.start_member(name)
        leader = etcd.leader()
        client = EtcdClient(etcd.endpoint(leader))

        def make_put() -> Put:
            return EtcdClient(etcd.endpoint(leader)).put

        pids = [proc.pid for proc in etcd.procs.values()]
        record("etcd x3", client.put, client.get, make_put, pids)
        recoveries = []
        for _ in range(3):
            leader = etcd.leader()
            others = [n for n in etcd.names if n != leader]
            etcd.kill(leader)
            start = time.monotonic()
            while True:
                try:
                    reply = EtcdClient(etcd.endpoint(others[0]), timeout=1.0).put("k", "v")
                    if isinstance(reply, dict) and "header" in reply:
                        break
                except OSError:
                    pass
                time.sleep(0.01)
            recoveries.append(time.monotonic() - start)
            etcd.start_member(leader)
            etcd.leader()
        RESULTS["etcd x3"]["leader_kill_recovery_s"] = statistics.median(recoveries)
    finally:
        etcd.stop()


def test_report() -> None:
    """Print every figure, and zdf/etcd ratios where etcd ran (lower is better for times)."""
    rows = sorted({k for figures in RESULTS.values() for k in figures})
    systems = list(RESULTS)
    lines = ["", f"{'figure':28}" + "".join(f"{s:>14}" for s in systems)]
    for row in rows:
        cells = "".join(
            f"{RESULTS[s][row]:>14.3f}" if row in RESULTS[s] else f"{'-':>14}" for s in systems
        )
        lines.append(f"{row:28}{cells}")
    if "etcd x3" in RESULTS and "zdf x3" in RESULTS:
        lines.append("ratios zdf x3 / etcd x3:")
        for row in rows:
            a, b = RESULTS["zdf x3"].get(row), RESULTS["etcd x3"].get(row)
            if a is not None and b:
                lines.append(f"  {row:26}{a / b:>8.2f}")
    report = "\n".join(lines)
    print(report)
    out = os.environ.get("ZDF_BENCH_REPORT")
    if out:
        Path(out).write_text(report + "\n")
