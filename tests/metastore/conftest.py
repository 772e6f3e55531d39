"""Fixtures: a real metastore server process on a free loopback port, killed by pid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MetastoreProcess]:
    proc = MetastoreProcess(str(tmp_path / "meta"), log_path=str(tmp_path / "meta.log"))
    try:
        proc.start()
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def client(server: MetastoreProcess) -> Iterator[MetaClient]:
    with MetaClient(server.addr, timeout=5.0) as c:
        yield c
