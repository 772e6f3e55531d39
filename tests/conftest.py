"""Shared fixtures: a real local cluster (metastore, master, executors as processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zdf.localcluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A started cluster of one metastore, one master and two executors; always stopped."""
    marker = request.node.get_closest_marker("cluster")
    options = dict(marker.kwargs) if marker else {}
    local = LocalCluster(str(tmp_path / "cluster"), **options)
    try:
        local.start()
        yield local
    except BaseException:
        print(local.logs())
        raise
    finally:
        local.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster(**options): options for the cluster fixture")
