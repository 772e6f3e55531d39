"""Finding the masters through the metastore: ``meta-endpoints`` alone is enough
for executors, the CLI and ``zdf.connect`` (DESIGN.md "Several hosts")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import zdf
from zdf import protocol as P
from zdf.discovery import DISCOVERY_MASTERS, find_masters
from zdf.localcluster import LocalCluster
from zdf.master.persist import DISCOVERY_MASTERS as WRITTEN_UNDER


def test_the_prefix_read_is_the_one_written() -> None:
    assert DISCOVERY_MASTERS == WRITTEN_UNDER


@pytest.mark.cluster(executors=1, discover=True, masters=2)
def test_executors_and_clients_find_the_masters(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    found = find_masters(cluster.meta_addrs)
    assert found[0] == leader.addr  # the newest epoch first
    # The executor was given no master (--join ""): it registered through discovery.
    rows = cluster.client().call(P.EXECUTOR_LIST)
    assert [r["state"] for r in rows] == ["alive"]
    env = {**os.environ, "ZDF_META_ENDPOINTS": cluster.meta_addr}
    cli = [sys.executable, "-m", "zdf.cli.main", "executor", "list", "--master-addr", ""]
    out = subprocess.run(
        [*cli, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in json.loads(out.stdout)] == [rows[0]["id"]]
    with zdf.connect(meta_endpoints=cluster.meta_addr) as client:
        assert client.submit(abs, -3).result(timeout=30) == 3
