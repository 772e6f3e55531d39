"""Shared fixtures: a real local cluster (metastore, master, executors as processes),
a single metastore process with a client, and a reactor closed after the test."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from zdf.localcluster import LocalCluster
from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess
from zdf.wire.reactor import Reactor


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A started cluster of one metastore, one master and two executors; always stopped.

    Options come from ``@pytest.mark.cluster(...)``; a failing test prints every log.
    """
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
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(local.logs())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster(**options): options for the cluster fixture")


@pytest.fixture
def metastore(tmp_path: Path) -> Iterator[MetastoreProcess]:
    """A real metastore process (one replica) on free loopback ports, killed by pid."""
    proc = MetastoreProcess(str(tmp_path / "meta"), log_path=str(tmp_path / "meta.log"))
    try:
        proc.start()
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def meta(metastore: MetastoreProcess) -> Iterator[MetaClient]:
    with MetaClient(metastore.addr, timeout=5.0) as client:
        yield client


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    try:
        yield loop
    finally:
        loop.close()
