"""Fixtures for the namespaced tests: a ``Network`` of hosts and a cluster on it.

Every test here skips, naming the reason, where namespaces cannot be made (not
root, no ``ip`` or ``nft``); everything made is torn down in ``finally``, even
when the test fails: the cluster's processes by pid, then whatever still runs in
the namespaces, then the namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import NetnsCluster
from .netns import Network, unavailable_reason

_REASON: list[str | None] = []


def _skip_unless_namespaces() -> None:
    if not _REASON:
        _REASON.append(unavailable_reason())
    if _REASON[0] is not None:
        pytest.skip(f"namespaced hosts unavailable: {_REASON[0]}")


@pytest.fixture
def network() -> Iterator[Network]:
    _skip_unless_namespaces()
    net = Network()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def hosts_cluster(
    network: Network, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[NetnsCluster]:
    """A started cluster, every process on its own host; options from
    ``@pytest.mark.cluster(...)`` as for the loopback ``cluster`` fixture."""
    marker = request.node.get_closest_marker("cluster")
    options = dict(marker.kwargs) if marker else {}
    cluster = NetnsCluster(network, str(tmp_path / "cluster"), **options)
    try:
        cluster.start(timeout=60)
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())
