"""The worker's object store on its own: values kept as they are, bytes counted, the limit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zdf.executor.objstore import SpillingStore, current_store, make_store, value_bytes


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


def test_a_spilling_store_keeps_int_and_string_keys_apart(tmp_path: Path) -> None:
    store = make_store(memory_limit=1 << 20, spill_dir=str(tmp_path / "w0"))
    assert isinstance(store, SpillingStore) and current_store() is store
    store[7] = np.ones(200_000)  # 1.6 MB: above the target, on disk at once
    store["7"] = b"seven"
    store["i:7"] = b"not the int"
    assert store.is_spilled(7) and not store.is_spilled("7")
    assert store["7"] == b"seven" and store["i:7"] == b"not the int" and store[7].sum() == 200_000
    assert sorted(map(str, store)) == ["7", "7", "i:7"] and 7 in store and [7] not in store
    with pytest.raises(TypeError):
        del store[[7]]  # not a store key (the runner ignores such a drop)
    assert len(os.listdir(tmp_path / "w0")) == 1
    del store[7]
    assert os.listdir(tmp_path / "w0") == [] and store.spilled_bytes == 0
    store[8] = np.ones(200_000)
    store.close()
    assert os.listdir(tmp_path / "w0") == [] and len(store) == 0
