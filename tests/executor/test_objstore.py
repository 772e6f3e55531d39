"""The worker's object store on its own: values kept as they are, bytes counted, the limit."""

from __future__ import annotations

import numpy as np

from zdf.executor.objstore import current_store, make_store, value_bytes


def test_values_are_kept_as_they_are_and_counted() -> None:
    store = make_store()
    assert current_store() is store
    array = np.ones(1000)
    store[1] = array
    store["lease:2"] = b"x" * 500
    assert store[1] is array  # no copy
    assert store.memory_bytes == 8000 + 500 and len(store) == 2
    store[1] = b"y" * 10  # replaced: the old size goes
    assert store.memory_bytes == 510
    del store["lease:2"]
    assert store.memory_bytes == 10 and list(store) == [1]
    assert store.pop(1) == b"y" * 10 and store.memory_bytes == 0
    assert not store.over_limit  # no limit by default


def test_over_its_memory_limit() -> None:
    store = make_store(memory_limit=1000, spill_dir="")
    store["a"] = np.zeros(100)  # 800 bytes
    assert not store.over_limit
    store["b"] = np.zeros(100)
    assert store.over_limit
    del store["a"]
    assert not store.over_limit


def test_containers_are_sized_by_what_they_hold() -> None:
    assert value_bytes({"x": np.zeros(1000), "y": [b"a" * 100]}) > 8100
