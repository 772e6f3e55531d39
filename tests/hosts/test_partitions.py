"""Faults between hosts: links cut with nftables while the benchmark job runs.

Every scenario: the job's output is exact (``verify-sink``), and the cluster
converges within the bound named beside it. A partition differs from a crash in
that nothing closes: both ends keep half-open TCP connections, and the cut-off
side keeps running. The bounds are the design's figures with room for a shared
2-core machine (keepalive TTL 1 s, interval 200 ms, election TTL 1 s).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from zdf.jobs.benchrun import BenchRun, assert_exact, start_bench
from zdf.localcluster import Child, wait_until

from .cluster import NetnsCluster
from .netns import Network

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEAD_BOUND = 1.5
"""Cut to the master reporting the executor dead (TTL 1 s + a heartbeat interval)."""

BACK_AFTER_DEAD_BOUND = 1.0
"""Dead declaration to the sinks writing at 90 % of their rate again (the goal)."""

ZOMBIE_STOP_BOUND = 2.5
"""Cut to the cut-off executor stopping its tasks by itself: the TTL (its probe of
every master, sent after half of it, unanswered), then a check interval; room for a
loaded machine."""

STANDBY_BOUND = 2.0
"""Leading master cut off to the standby serving as the leader."""

META_LEADER_BOUND = 3.0
"""Metastore leader cut off from its followers to a new leader among them."""

CONVERGE_BOUND = 10.0
"""Link healed to every executor alive again."""

FENCED_EXIT_BOUND = 5.0
"""Link healed to the deposed leader exiting (its next lease keepalive, every TTL/4,
finds its lease gone; or its next framework write is refused): room for a loaded
machine and for the metastore client's retry after the partition."""


def log_has(child: Child, text: str) -> bool:
    with open(child.log_path, errors="replace") as fh:
        return text in fh.read()


def cut_executor(
    network: Network, cluster: NetnsCluster, tmp_path: Path, how: str
) -> tuple[BenchRun, dict[str, float]]:
    """Cut the busiest executor mid-job (``how``: isolate, from-master, one-way) and
    follow it: declared dead, tasks moved, stopped by itself, sinks back, job exact."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.25)
    victim = run.busiest_executor()
    victim_id = victim.extra["id"]
    host, master = cluster.host_of(victim), cluster.host_of(cluster.masters[0])
    run.faults_ns.append(time.time_ns())
    cut_at = time.monotonic()
    if how == "isolate":
        network.isolate(host)
    elif how == "from-master":
        network.cut(host, master)
    else:
        network.cut_oneway(host, master)
    wait_until(lambda: cluster.executor_state(victim_id) == "dead", 10, "declared dead", 0.02)
    dead_ns, dead_s = time.time_ns(), time.monotonic() - cut_at
    moved_s = run.wait_moved(victim_id) - cut_at
    wait_until(
        lambda: log_has(victim, "no master answered"), 10, "the cut-off executor to stop its tasks"
    )
    stopped_s = time.monotonic() - cut_at
    job = run.wait_end(timeout=120)
    assert_exact(run, job)
    recovery = run.recovery(since_ns=dead_ns)
    assert recovery.recovered_s is not None, recovery
    back_s = recovery.recovered_s
    figures = {
        "dead_s": dead_s,
        "moved_s": moved_s,
        "stopped_s": stopped_s,
        "back_s": back_s,
        "stalled_s": recovery.stalled_s,
    }
    print(f"cut ({how}): " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    assert dead_s < DEAD_BOUND, figures
    assert stopped_s < ZOMBIE_STOP_BOUND, figures
    assert back_s < BACK_AFTER_DEAD_BOUND, (figures, recovery)
    network.heal(host)
    wait_until(lambda: cluster.executor_state(victim_id) == "alive", CONVERGE_BOUND, "it to rejoin")
    return run, figures


def test_executor_isolated_mid_job(network: Network, hosts_cluster: NetnsCluster, tmp_path) -> None:
    cut_executor(network, hosts_cluster, tmp_path, "isolate")


def test_executor_cut_from_master_not_metastore(
    network: Network, hosts_cluster: NetnsCluster, tmp_path
) -> None:
    cut_executor(network, hosts_cluster, tmp_path, "from-master")


def test_executor_one_way_cut(network: Network, hosts_cluster: NetnsCluster, tmp_path) -> None:
    """What the executor sends to the master is lost; what the master sends arrives."""
    cut_executor(network, hosts_cluster, tmp_path, "one-way")


def job_writes(cluster: NetnsCluster, since: int) -> list[dict[str, Any]]:
    """The job records written since revision ``since``, from the metastore's history."""
    events = cluster.meta_history("/zdf/framework/jobs/", since)
    return [{**e, "doc": json.loads(e["value"])} for e in events if e["value"]]


def epoch(cluster: NetnsCluster) -> int:
    """The leading master's epoch: the election key's create_revision."""
    found = cluster.meta_get("/zdf/election/master")
    assert found is not None, "a leader holds the election key"
    return int(found["create_revision"])


@pytest.mark.cluster(masters=2)
def test_leading_master_isolated_is_fenced(
    network: Network, hosts_cluster: NetnsCluster, tmp_path
) -> None:
    cluster = hosts_cluster
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.25)
    old = wait_until(cluster.leader, 10, "a leader")
    old_epoch = epoch(cluster)
    run.faults_ns.append(time.time_ns())
    cut_at = time.monotonic()
    network.isolate(cluster.host_of(old))
    new = wait_until(
        lambda: (m := cluster.leader()) is not None and m is not old and m, 10, "a new leader", 0.02
    )
    serving_s = time.monotonic() - cut_at
    network.heal(cluster.host_of(old))
    healed_at = time.monotonic()
    # Back on the network it learns it was deposed: it stops acting and exits with
    # code 3 (its service manager starts it again as a standby), saying why.
    wait_until(lambda: not old.alive(), FENCED_EXIT_BOUND, "the deposed leader to exit", 0.02)
    exited_s = time.monotonic() - healed_at
    assert old.proc.returncode == 3, old.proc.returncode
    assert log_has(old, "lost its leadership"), "the deposed leader says why it stops"
    job = run.wait_end(timeout=120)
    assert_exact(run, job)
    new_epoch = epoch(cluster)
    assert new_epoch > old_epoch
    # The deposed leader, back on the network, must not write: every job record
    # written after the new epoch began carries the new epoch.
    wait_until(lambda: cluster.leader() is new, 10, "one leader after the heal")
    writes = job_writes(cluster, old_epoch)
    late = [w for w in writes if w["mod_revision"] > new_epoch]
    assert late, "the new leader wrote the job's records"
    stale = [w for w in late if w["doc"].get("written_epoch") != new_epoch]
    print(
        f"master cut off: standby serving after {serving_s:.2f}s; {len(late)} writes after; "
        f"the old leader exited {exited_s:.2f}s after the heal"
    )
    assert not stale, stale
    assert serving_s < STANDBY_BOUND, f"standby serving {serving_s:.2f}s after the cut"


@pytest.mark.cluster(metastores=3)
def test_metastore_leader_cut_from_followers(
    network: Network, hosts_cluster: NetnsCluster, tmp_path
) -> None:
    cluster = hosts_cluster
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.25)
    leader = wait_until(cluster.metastore_leader, 10, "a metastore leader")
    host = cluster.host_of(leader)
    followers = [c for c in cluster.metastores if c is not leader]
    cut_at = time.monotonic()
    for follower in followers:
        network.cut(host, cluster.host_of(follower))

    def new_leader() -> bool:
        found = cluster.metastore_leader()
        return found is not None and found is not leader

    wait_until(new_leader, 10, "a new metastore leader", 0.05)
    elected_s = time.monotonic() - cut_at
    job = run.wait_end(timeout=120)
    assert_exact(run, job)
    network.heal(host)
    print(f"metastore leader cut off: new leader after {elected_s:.2f}s")
    assert elected_s < META_LEADER_BOUND, f"new metastore leader after {elected_s:.2f}s"
    assert all(cluster.executor_state(c.extra["id"]) == "alive" for c in cluster.executors)


LOSS_PERCENT = 5
LOSS_JOB: dict[str, Any] = {"rate": 0, "rcd-cnt": 1_000_000, "batch-size": 4096}
"""Unpaced, 4,000,000 records in the bench's own batches: long enough for TCP's
retransmissions to show."""


def timed_bench(cluster: NetnsCluster, sink_dir: Path) -> float:
    """The benchmark job, submitted to its end, exact: how long it took."""
    started = time.monotonic()
    run = start_bench(cluster, str(sink_dir), **LOSS_JOB)
    assert_exact(run, run.wait_end(timeout=150))
    return time.monotonic() - started


@pytest.mark.timeout(400)
def test_loss_between_executors(network: Network, hosts_cluster: NetnsCluster, tmp_path) -> None:
    """5 % of the packets from each executor to the other dropped at random (nftables
    ``numgen``; netem's ``loss`` where the kernel has it is the same): the job stays
    exact. Its time is printed beside the same job without loss, in the same run."""
    cluster = hosts_cluster
    clean_s = timed_bench(cluster, tmp_path / "clean")
    hosts = [cluster.host_of(c) for c in cluster.executors]
    for a in hosts:
        for b in hosts:
            if a is not b:
                network.lossy(a, b, LOSS_PERCENT)
    lossy_s = timed_bench(cluster, tmp_path / "lossy")
    dropped = sum(network.dropped(host) for host in hosts)
    print(
        f"{LOSS_PERCENT} % loss between executors: {lossy_s:.2f}s vs {clean_s:.2f}s without "
        f"({lossy_s / clean_s:.2f}x), 4,000,000 records, exact; {dropped} packets dropped"
    )
    assert dropped > 0, "the executors exchanged data, and some of it was lost"
    assert all(cluster.executor_state(c.extra["id"]) == "alive" for c in cluster.executors)


def test_delay(network: Network, tmp_path) -> None:
    """2 ms delay on every executor's link: the job stays exact. Delay needs netem
    (nftables can drop, not hold back): skipped, saying so, on a kernel without it."""
    probe = network.host("netem-probe")
    made = probe.run(
        "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "2ms", check=False
    )
    if made.returncode != 0:
        pytest.skip(
            f"delay needs the netem qdisc, which this kernel lacks ({made.stderr.strip()}; "
            "CONFIG_NET_SCH_NETEM); loss is tested with nftables (test_loss_between_executors)"
        )
    cluster = NetnsCluster(network, str(tmp_path / "cluster"))
    try:
        cluster.start(timeout=60)
        for child in cluster.executors:
            cluster.host_of(child).run(
                "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "2ms"
            )  # fmt: skip
        run = start_bench(cluster, str(tmp_path / "sink"))
        assert_exact(run, run.wait_end(timeout=120))
    finally:
        cluster.stop()
