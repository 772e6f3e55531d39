"""After a master restart every executor registers once, not once per retry it queued."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from zdf import protocol as P
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.mark.cluster(executors=2, workers=1)
def test_each_executor_registers_once_with_the_restarted_master(cluster: LocalCluster) -> None:
    old = cluster.masters[0]
    log = Path(old.log_path)
    cluster.kill(old)
    cluster.children.remove(old)  # the restarted process takes its place
    cluster.masters.remove(old)
    down = time.monotonic()
    # Away for 2 s: every executor retries its registration several times meanwhile.
    wait_until(lambda: time.monotonic() - down > 2, 5, "2 s of downtime")
    before = len(log.read_text())
    cluster.start_master(0)
    cluster._client = None  # a fresh connection to the new process
    cluster.wait_ready(30)
    # Give late duplicates the time they took before (they came within 0.1 s).
    wait_until(lambda: time.monotonic() - down > 4, 5, "settled")
    lines = log.read_text()[before:]
    for executor in ("exec-1", "exec-2"):
        assert lines.count(f"executor {executor} registered") == 1, lines
    rows = cluster.client().call(P.EXECUTOR_LIST)
    assert {r["id"]: r["state"] for r in rows} == {"exec-1": "alive", "exec-2": "alive"}
