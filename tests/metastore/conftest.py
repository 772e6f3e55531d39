"""Fixtures: a real metastore server process on a free loopback port, killed by pid."""

from __future__ import annotations

import pytest

from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess


@pytest.fixture
def server(metastore: MetastoreProcess) -> MetastoreProcess:
    """The shared ``metastore`` fixture (tests/conftest.py), by this package's name."""
    return metastore


@pytest.fixture
def client(meta: MetaClient) -> MetaClient:
    return meta
