"""Worker-to-worker transfer on its own: a store port and a fetcher in this process."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from zdf.executor import objtransfer
from zdf.executor.objstore import make_store
from zdf.executor.objtransfer import Failed, Fetcher, MissingObject, StoreServer
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import DEFAULT_MAX_MESSAGE_BYTES, free_port

pytestmark = pytest.mark.timeout(60)


def fetch(reactor: Reactor, key: Any, addrs: list[str], nbytes: int = 0) -> tuple[Any, Any]:
    fetcher = Fetcher(reactor)
    got: list[tuple[Any, Any]] = []
    try:
        fetcher.fetch(key, addrs, nbytes, lambda value, error: got.append((value, error)))
        reactor.run(until=lambda: bool(got), deadline=time.monotonic() + 30)
    finally:
        fetcher.close()
    assert got, "the fetch never finished"
    return got[0]


def test_a_value_over_the_frame_limit_is_fetched_whole(reactor: Reactor) -> None:
    store = make_store()
    big = np.arange(DEFAULT_MAX_MESSAGE_BYTES // 8 + 1_000_000, dtype=np.int64)  # > 64 MiB
    store[7] = big
    server = StoreServer(store, "127.0.0.1")
    try:
        value, error = fetch(reactor, 7, [server.addr], big.nbytes)
        assert error is None
        np.testing.assert_array_equal(value, big)
        assert server.served == 1
    finally:
        server.close()


def test_a_dead_holder_is_skipped_and_a_missing_value_is_an_error(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objtransfer, "FETCH_BASE_TIMEOUT", 0.3)
    store = make_store()
    store["lease:1"] = {"x": [1, 2]}
    store["bad"] = Failed([b"frames"])
    server = StoreServer(store, "127.0.0.1")
    dead = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    try:
        value, error = fetch(reactor, "lease:1", [dead, server.addr])
        assert error is None and value == {"x": [1, 2]}
        value, error = fetch(reactor, "gone", [server.addr])
        assert value is None and isinstance(error, MissingObject)
        value, error = fetch(reactor, "bad", [server.addr])
        assert isinstance(value, Failed) and value.frames == [b"frames"]
    finally:
        server.close()
