"""Figures on namespaced hosts (tests/hosts), each against a baseline in the same run.

* ``throughput``: the unpaced benchmark job (10 tables x 3 streams x 300,000
  records) on a loopback cluster and on a cluster whose every process is on a host
  of its own (data pipes between hosts over tcp:// through a bridge, CURVE; between
  the workers of one executor over the ipc:// twins of their hubs), the two
  clusters started once and the jobs alternated loopback, hosts, loopback, hosts...
  (``ROUNDS`` each) so that drift on a shared machine hits both alike; rate = records
  / (submit to finished, polled every 50 ms); goal: hosts >= 0.8 x loopback, reported
  as the ratio of the medians and the median of the per-pair ratios. A third
  cluster, every process on one namespaced host (``one-host``: tcp:// pipes between
  executors over that host's loopback, no veth -- each process is started in a mount
  namespace of its own, so executors do not count as one host), alternated with them,
  tells what tcp:// costs from what the veth and bridge cost; a fourth (``hosts-tcp``,
  on hosts too, ``same-host-ipc = false``: every pipe tcp://, as before the twins)
  tells what the twins gain; the executors' CPU per record (their process trees,
  psutil) and the machine's load are reported beside.
* ``detection``: on hosts, kill -9 of an idle executor until the master lists it
  ``dead`` (goal <= 100 ms) and SIGSTOP until ``dead`` (goal <= 1 s), polled through
  the namespace proxy (a call costs a few ms: the figures are that much late).

Skips where namespaces cannot be made. Figures are printed (run with ``-s``) and
kept in ``extra_info``; the goals are reported, asserted only with room for noise.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from zdf.jobs.benchrun import assert_exact, start_bench
from zdf.localcluster import LocalCluster, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hosts.cluster import NetnsCluster
from tests.hosts.netns import Network, unavailable_reason

ROUNDS = int(os.environ.get("ZDF_BENCH_HOSTS_ROUNDS", "5"))
JOB: dict[str, Any] = {
    "flow-id": "hosts",
    "table-num": 10,
    "servers": 3,
    "rcd-cnt": 300_000,
    "ddl-freq": 1000,
    "batch-size": 4096,
    "rate": 0,
}
DETECT_ROUNDS = 5
TCP_ONLY = {"ZDF_SAME_HOST_IPC": "false"}
"""Executors of the ``hosts-tcp`` cluster: every pipe tcp://, as before the twins."""


@pytest.fixture
def network() -> Any:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"namespaced hosts unavailable: {reason}")
    net = Network()
    try:
        yield net
    finally:
        net.close()


def _executors_cpu(cluster: LocalCluster) -> float:
    """CPU seconds used so far by the executors and their workers."""
    total = 0.0
    for child in cluster.executors:
        try:
            root = psutil.Process(child.proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def _rate(cluster: LocalCluster, sink: Path, cpu: list[float]) -> float:
    cpu_before = _executors_cpu(cluster)
    started = time.monotonic()
    run = start_bench(cluster, str(sink), **JOB)
    job = run.wait_end(timeout=300)
    elapsed = time.monotonic() - started
    cpu.append((_executors_cpu(cluster) - cpu_before) / run.expected * 1e6)
    assert_exact(run, job)
    return run.expected / elapsed


def test_throughput_hosts_vs_loopback(network: Network, tmp_path: Path, benchmark: Any) -> None:
    second = Network()  # hosts of their own for the cluster without ipc:// twins
    clusters = {
        "loopback": LocalCluster(str(tmp_path / "loop"), log_level="warning"),
        "one-host": NetnsCluster(network, str(tmp_path / "one"), "one", log_level="warning"),
        "hosts": NetnsCluster(network, str(tmp_path / "hosts"), log_level="warning"),
        "hosts-tcp": NetnsCluster(
            second, str(tmp_path / "tcp"), log_level="warning", extra_env=TCP_ONLY
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in clusters}
    cpu: dict[str, list[float]] = {name: [] for name in clusters}  # us per record
    load = [os.getloadavg()[0]]  # the machine's 1-minute load, before and after the rounds
    try:
        for cluster in clusters.values():
            cluster.start(timeout=60)

        def one(i: int) -> None:
            order = list(clusters) if i % 2 == 0 else list(reversed(clusters))
            for name in order:
                rates[name].append(_rate(clusters[name], tmp_path / f"{name}{i}", cpu[name]))

        rounds = iter(range(ROUNDS))
        benchmark.pedantic(lambda: one(next(rounds)), rounds=ROUNDS, iterations=1)
        load.append(os.getloadavg()[0])
    finally:
        for cluster in clusters.values():
            cluster.stop()
        second.close()
    ratio = statistics.median(rates["hosts"]) / statistics.median(rates["loopback"])
    pairs = [h / lo for h, lo in zip(rates["hosts"], rates["loopback"], strict=True)]
    benchmark.extra_info.update({k: [round(r) for r in v] for k, v in rates.items()})
    benchmark.extra_info["ratio_of_medians"] = round(ratio, 3)
    benchmark.extra_info["pair_ratios"] = [round(p, 3) for p in pairs]
    one_host = statistics.median(rates["one-host"]) / statistics.median(rates["loopback"])
    tcp_only = statistics.median(rates["hosts-tcp"]) / statistics.median(rates["loopback"])
    base_cpu = statistics.median(cpu["loopback"])
    cpu_ratios = {name: statistics.median(v) / base_cpu for name, v in cpu.items()}
    benchmark.extra_info["one_host_ratio_of_medians"] = round(one_host, 3)
    benchmark.extra_info["hosts_tcp_only_ratio_of_medians"] = round(tcp_only, 3)
    benchmark.extra_info["load_1min"] = [round(x, 2) for x in load]
    benchmark.extra_info["executor_cpu_us_per_record"] = {
        name: [round(x, 3) for x in v] for name, v in cpu.items()
    }
    print(
        f"\nbench job records/s: loopback {[round(r) for r in rates['loopback']]}, "
        f"hosts {[round(r) for r in rates['hosts']]}; hosts/loopback: medians {ratio:.2f}, "
        f"per pair {[round(p, 2) for p in pairs]} (median {statistics.median(pairs):.2f}; "
        f"goal >= 0.8); one host, tcp:// between executors: {one_host:.2f}; hosts without "
        f"ipc:// twins: {tcp_only:.2f}; executors' CPU per record vs loopback: one host "
        f"{cpu_ratios['one-host']:.2f}x, hosts {cpu_ratios['hosts']:.2f}x, hosts without twins "
        f"{cpu_ratios['hosts-tcp']:.2f}x; "
        f"load (1 min, {os.cpu_count()} CPUs) {load[0]:.1f} before, {load[-1]:.1f} after"
    )
    assert statistics.median(pairs) > 0.5


def test_detection_on_hosts(network: Network, tmp_path: Path, benchmark: Any) -> None:
    cluster = NetnsCluster(
        network, str(tmp_path / "c"), executors=DETECT_ROUNDS * 2, workers=1, log_level="warning"
    )
    crash: list[float] = []
    hang: list[float] = []
    try:
        cluster.start(timeout=120)
        victims = iter(list(cluster.executors))

        def dead_after(sig: int) -> float:
            victim = next(victims)
            at = time.monotonic()
            cluster.kill(victim, sig)
            wait_until(
                lambda: cluster.executor_state(victim.extra["id"]) == "dead", 10, "dead", 0.001
            )
            return time.monotonic() - at

        def one() -> None:
            crash.append(dead_after(signal.SIGKILL))
            hang.append(dead_after(signal.SIGSTOP))

        benchmark.pedantic(one, rounds=DETECT_ROUNDS, iterations=1)
    finally:
        for child in cluster.executors:
            if child.alive():
                cluster.kill(child, signal.SIGCONT)
        cluster.stop()
    benchmark.extra_info.update(
        {"kill_to_dead_ms": [round(x * 1000) for x in crash],
         "stop_to_dead_ms": [round(x * 1000) for x in hang]}
    )  # fmt: skip
    print(
        f"\non hosts: kill -9 -> dead median {statistics.median(crash) * 1000:.0f} ms "
        f"({[round(x * 1000) for x in crash]}; goal <= 100 ms); SIGSTOP -> dead median "
        f"{statistics.median(hang) * 1000:.0f} ms ({[round(x * 1000) for x in hang]}; goal <= 1 s)"
    )
    assert statistics.median(crash) < 0.5
    assert statistics.median(hang) < 1.5
