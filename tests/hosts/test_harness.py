"""The harness itself: hosts reach each other only over the bridge, faults cut what
they say, and nothing is left behind."""

from __future__ import annotations

import subprocess

from .cluster import NetnsCluster
from .netns import Network


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_cluster_on_hosts_runs_a_job_and_leaves_nothing(network: Network, tmp_path) -> None:
    from zdf.jobs.benchrun import assert_exact, start_bench

    cluster = NetnsCluster(network, str(tmp_path / "c"), executors=2)
    try:
        cluster.start(timeout=60)
        addrs = {c.addr.rpartition(":")[0] for c in cluster.children}
        assert len(addrs) == len(cluster.children), "every process on a host of its own"
        assert all(a.startswith("10.77.0.") for a in addrs)
        run = start_bench(cluster, str(tmp_path / "sink"), rate=0)
        assert_exact(run, run.wait_end())
    finally:
        cluster.stop()
        mine = {ns for ns in namespaces() if ns.startswith(network.tag)}
        network.close()
    assert mine, "the run made namespaces"
    assert not {ns for ns in namespaces() if ns.startswith(network.tag)}
