"""Lineage: results lost with their executor are computed again from their tasks."""

from __future__ import annotations

import gc
import time

import numpy as np
import psutil
import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

N = 10_000


def _functions(cluster: LocalCluster) -> dict[str, int]:
    return cluster.client().call("cluster_status")["functions"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("release_leaves", [False, True])
def test_a_three_level_graph_survives_a_killed_executor(
    cluster: LocalCluster, release_leaves: bool
) -> None:
    with zdf.connect(cluster.master_addr) as client:
        leaves = [client.submit(examples.ones, N) for _ in range(8)]  # level 1
        mids = [client.submit(examples.add, leaves[2 * i], leaves[2 * i + 1]) for i in range(4)]
        client.gather(mids)  # level 2 is on the workers (and here)
        held_on = {client.submit(examples.pid_of, m).result(10) for m in mids}
        victim = next(
            c for c in cluster.executors if c.pid in {psutil.Process(p).ppid() for p in held_on}
        )
        if release_leaves:  # the leaves' values go: level 2 is made again from level 1's tasks
            del leaves
            gc.collect()
        killed = time.monotonic()
        cluster.kill(victim)
        left = client.submit(examples.add, mids[0], mids[1])  # level 3
        right = client.submit(examples.add, mids[2], mids[3])
        top = client.submit(examples.add, left, right)
        np.testing.assert_array_equal(top.result(30), np.full(N, 8.0))
        recovered = time.monotonic() - killed
        assert _functions(cluster)["recomputed"] >= 1
        print(f"a 3-level graph's result {recovered:.2f} s after its executor was killed")
