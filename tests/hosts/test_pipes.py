"""Data pipes on hosts: between two workers of one executor over the hub's ipc://
twin, between executors of two hosts over tcp:// (zdf.runtime.hubaddr), told from
the hosts' own socket tables while a job runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zdf.jobs.benchrun import assert_exact, start_bench
from zdf.localcluster import wait_until
from zdf.runtime import hub, hubaddr
from zdf.wire.addresses import host_of

from .cluster import NetnsCluster
from .netns import Network
from .sockets import tcp_peers, unix_accepted

pytestmark = pytest.mark.timeout(180)


def _hubs(cluster: NetnsCluster) -> set[hubaddr.HubAddress]:
    endpoints = cluster.meta_history("/zdf/framework/endpoints/", since=1, quiet=0.3)
    pipes = [e["value"] for e in endpoints if "://" in e["value"] and hub.SEP in e["value"]]
    return {hubaddr.parse(hub.split(pipe)[0]) for pipe in pipes}


def _traffic(cluster: NetnsCluster) -> dict[str, Any]:
    """Per hub published so far: the ipc:// dialers it accepted and where its tcp:// ones
    came from ("own" host or "other")."""
    pids = {c.addr.rpartition(":")[0]: c.proc.pid for c in cluster.executors}
    seen: dict[str, Any] = {"ipc": 0, "tcp_own": [], "tcp_other": [], "twins": 0}
    for address in _hubs(cluster):
        ip = host_of(address.primary)
        pid = pids.get(ip)
        if pid is None or not address.ipc_path:
            continue
        seen["twins"] += 1
        port = int(address.primary.rpartition(":")[2])
        seen["ipc"] += unix_accepted(pid, address.ipc_path)
        for peer in tcp_peers(pid, ip, port):
            seen["tcp_own" if peer == ip else "tcp_other"].append((address.primary, peer))
    return seen


@pytest.mark.cluster(executors=2, workers=2)
def test_pipes_take_ipc_on_their_host_and_tcp_across_hosts(
    network: Network, hosts_cluster: NetnsCluster, tmp_path: Path
) -> None:
    cluster = hosts_cluster
    run = start_bench(cluster, str(tmp_path / "sink"), servers=3, rate=5000, **{"rcd-cnt": 30000})
    seen = wait_until(
        lambda: (lambda s: s if s["ipc"] and s["tcp_other"] else None)(_traffic(cluster)),
        60,
        "pipes over ipc:// within a host and over tcp:// between hosts",
        0.2,
    )
    assert not seen["tcp_own"], f"a pipe within a host went over tcp://: {seen['tcp_own']}"
    assert_exact(run, run.wait_end(timeout=120))
