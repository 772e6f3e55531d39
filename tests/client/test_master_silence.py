"""A client whose master dies says so once, not once per probe, before it gives up."""

from __future__ import annotations

import logging

import pytest

import zdf
from zdf.errors import ZdfError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.mark.cluster(executors=1, workers=1)
def test_master_silent_is_logged_once(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zdf.client")
    with zdf.connect(cluster.master_addr, timeout=3.0) as client:
        held = client.submit(examples.hold, 300)
        wait_until(
            lambda: cluster.client().call("cluster_status")["functions"]["inflight"] == 1,
            30,
            "the function running",
        )
        cluster.kill(cluster.masters[0])
        with pytest.raises(ZdfError):
            held.result(30)
    silent = [r for r in caplog.records if "silent for" in r.getMessage()]
    assert len(silent) == 1, [r.getMessage() for r in silent]
