"""Metastore latency from one client against a real server process.

``put`` is acknowledged only after its batch is fsynced, so its latency is
dominated by the disk's sync time; ``get`` is one round trip over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess


@pytest.fixture(scope="module")
def meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaClient]:
    base = tmp_path_factory.mktemp("metastore-bench")
    server = MetastoreProcess(str(base / "data"), log_path=str(base / "meta.log"))
    try:
        server.start()
        with MetaClient(server.addr, timeout=10.0) as client:
            yield client
    finally:
        server.kill()


def test_put_latency_synced(benchmark, meta: MetaClient) -> None:  # type: ignore[no-untyped-def]
    value = b"x" * 100
    revision = benchmark(meta.put, "bench/put", value)
    assert revision > 0


def test_get_latency(benchmark, meta: MetaClient) -> None:  # type: ignore[no-untyped-def]
    meta.put("bench/get", b"y" * 100)
    kv = benchmark(meta.get, "bench/get")
    assert kv is not None and kv.value == b"y" * 100
