"""Partitioning: every row reaches exactly one channel (hash: by key), nothing lost."""

from __future__ import annotations

import numpy as np
import pytest

from zdf.dataflow.partition import hash_channels, split, stable_hash

DTYPE = np.dtype([("key", "<i8"), ("value", "<i8")])


def rows(n: int, keys: int) -> np.ndarray:
    out = np.empty(n, DTYPE)
    out["value"] = np.arange(n)
    out["key"] = (np.arange(n) * 7919) % keys
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_hash_sends_each_key_to_exactly_one_channel_and_keeps_every_row(n: int) -> None:
    batch = rows(50_000, 1000)
    pieces = split(batch, "hash", n, "key", step=3)
    assert len(pieces) == n
    owner: dict[int, int] = {}
    for ch, piece in enumerate(pieces):
        assert piece.dtype == DTYPE
        assert (np.diff(piece["value"]) > 0).all(), "rows keep their order within a piece"
        for key in np.unique(piece["key"]).tolist():
            assert owner.setdefault(key, ch) == ch, f"key {key} in two channels"
    assert sorted(np.concatenate(pieces)["value"].tolist()) == list(range(50_000))
    # The same key goes to the same channel in any other batch (any upstream instance).
    again = split(rows(999, 1000)[::-1], "hash", n, "key", step=0)
    for ch, piece in enumerate(again):
        assert all(owner[k] == ch for k in piece["key"].tolist())
    if n > 1:  # and the keys spread over every channel
        assert all(len(p) for p in pieces)


def test_hash_is_stable_across_processes_and_typed() -> None:
    # Fixed values: a change of the hash would move keys between instances of a running job.
    assert hash_channels(np.array([0, 1, 2, 3, 1000], np.int64), 3).tolist() == [
        int(c) for c in hash_channels(np.array([0, 1, 2, 3, 1000], np.int32), 3)
    ]
    words = np.array([b"zero", b"mq", b"zero"], "S8")
    h = stable_hash(words)
    assert h[0] == h[2] and h[0] != h[1]
    assert hash_channels(np.array(["a", "b", "a"]), 5)[0] == hash_channels(np.array(["a"]), 5)[0]


def test_broadcast_rebalance_forward() -> None:
    batch = rows(1000, 10)
    assert all(p is batch for p in split(batch, "broadcast", 3, "", 0))
    for step in range(4):
        pieces = split(batch, "rebalance", 3, "", step)
        assert sorted(len(p) for p in pieces) == [333, 333, 334]
        assert sorted(np.concatenate(pieces)["value"].tolist()) == list(range(1000))
    assert split(batch, "rebalance", 3, "", 0)[0][0] != split(batch, "rebalance", 3, "", 1)[0][0]
    assert split(batch, "forward", 1, "", 5)[0] is batch
