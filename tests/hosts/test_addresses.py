"""Addresses across hosts: every process binds 0.0.0.0 and advertises its host's
address, executors find the masters in the metastore, data pipes between hosts are
tcp:// at advertised hosts, and the sinks of several hosts write into one shared
folder that ``verify-sink --sink-dir`` reads from yet another host.

On shared storage: namespaces share this machine's filesystem, so the folder is
"shared" the way an NFS mount is shared between machines in name only. What this
shows is that sinks on different hosts write their files under one path without
stepping on each other (one file per stream, each under a lock), and that the
checker reads whatever directory it is told; what it cannot show is a network
filesystem's own caching and locking (docs/deploy.md says what to mount how).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zdf.jobs.benchrun import assert_exact, start_bench

from .cluster import NetnsCluster
from .netns import Network


@pytest.mark.slow  # about 15-30 s; tests/integration/test_discovery.py is the short form
@pytest.mark.cluster(executors=2, bind_any=True, discover=True)
def test_bind_any_advertise_and_discovery(
    network: Network, hosts_cluster: NetnsCluster, tmp_path: Path
) -> None:
    cluster = hosts_cluster
    rows = cluster.client().call("executor_list")
    assert sorted(r["addr"] for r in rows) == sorted(c.addr for c in cluster.executors)
    assert all(not r["addr"].startswith("0.0.0.0") for r in rows)
    for child in cluster.children:
        assert "0.0.0.0:" in " ".join(child.args), child.args  # bound on every interface
    shared = tmp_path / "shared"
    run = start_bench(cluster, str(shared), rate=0, servers=3)
    job = run.wait_end(timeout=120)
    assert_exact(run, job)
    hosts_of_sinks = {t["executor"] for t in job["tasks"] if t["kind"] == "sink"}
    assert len(hosts_of_sinks) == 2, "sinks on both hosts wrote into the one folder"
    # Pipes between hosts went over tcp:// to advertised addresses, never ipc:// or 0.0.0.0.
    endpoints = cluster.meta_history("/zdf/framework/endpoints/", since=1, quiet=0.5)
    addrs = {e["value"] for e in endpoints if "://" in e["value"]}  # (not done flags)
    assert addrs and all(a.startswith("tcp://10.77.0.") for a in addrs), addrs
    # verify-sink on another host (the client's), told where the shared folder is.
    config = tmp_path / "bench.toml"
    config.write_text(
        'flow-id = "fault"\ntable-num = 4\nservers = 3\nrcd-cnt = 20000\nddl-freq = 1000\n'
        'sink-dir = "/nonexistent"\n'
    )
    verify = [sys.executable, "-m", "zdf.cli.main", "verify-sink", "--config", str(config)]
    client = network.host("client")
    ok = subprocess.run(
        [*client.prefix, *verify, "--sink-dir", str(shared)],
        capture_output=True, text=True, timeout=60, env=cluster.env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    elsewhere = subprocess.run(
        [*client.prefix, *verify, "--sink-dir", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=60, env=cluster.env,
    )  # fmt: skip
    assert elsewhere.returncode != 0
    assert os.listdir(shared / "fault")
    # A function task from another host: its direct port advertised, not 0.0.0.0.
    answer = cluster.proxy.request(
        kind="function_abs", endpoints=cluster.meta_addrs, value=-7, timeout=30.0
    )
    assert answer == 7
