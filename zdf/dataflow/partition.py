"""How one task's output batch is split among the instances of the next stage.

* ``forward``: instance i of the upstream feeds instance i downstream (one channel);
* ``hash`` on a field: each row goes to channel ``stable_hash(row[field]) % n``,
  so each key reaches exactly one instance, whichever upstream instance sent it;
* ``broadcast``: every channel gets the whole batch;
* ``rebalance``: the batch is cut into n contiguous pieces, the first piece
  going to a channel that turns with the step, so load spreads evenly;
* ``custom``: the sending operator's ``route(rows, n, step)`` splits the batch
  (``zdf.dataflow.operator.FlowOperator.route``), for splits none of the above
  makes (the benchmark's producers: data rows to one stream, DDLs to all).

Every split is vectorised (numpy over the whole batch) and deterministic: the
same batch at the same step splits the same way on any host and after any
restart, which is what lets a restarted task reproduce its output exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PARTITIONS = ("forward", "hash", "broadcast", "rebalance", "custom")

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads consecutive keys
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_BASIS = np.uint64(0xCBF29CE484222325)
_FMIX = np.uint64(0xFF51AFD7ED558CCD)


def stable_hash(values: np.ndarray) -> np.ndarray:
    """A uint64 hash per element, the same in every process (no Python ``hash``)."""
    kind = values.dtype.kind
    if kind in "iub":
        mixed = values.astype(np.int64, copy=False).view(np.uint64) * _MIX
        return mixed ^ (mixed >> np.uint64(29))
    if kind == "f":
        return stable_hash(np.ascontiguousarray(values, np.float64).view(np.int64))
    # Strings and raw bytes: FNV-1a over the bytes of each element, one column at a time.
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), -1)
    h = np.full(len(values), _FNV_BASIS, np.uint64)
    with np.errstate(over="ignore"):
        for col in range(raw.shape[1]):
            h ^= raw[:, col].astype(np.uint64)
            h *= _FNV_PRIME
        # FNV's last bytes reach its top bits weakly: finish with MurmurHash3's fmix64.
        h ^= h >> np.uint64(33)
        h *= _FMIX
        h ^= h >> np.uint64(33)
    return h


def hash_channels(values: np.ndarray, n: int) -> np.ndarray:
    """The channel of each value under ``hash`` partitioning into ``n`` (0 .. n-1).

    The top 32 bits of the hash scaled to ``n`` (Lemire's multiply-shift), cheaper
    than a modulo and as even."""
    high = stable_hash(values) >> np.uint64(32)
    return ((high * np.uint64(n)) >> np.uint64(32)).astype(np.intp)


def split_rows(rows: np.ndarray, channels: np.ndarray, n: int) -> list[np.ndarray]:
    """Piece j = the rows whose channel is j, in their order: one stable radix sort of
    the channel numbers (uint8) and one take of the rows as opaque records."""
    small = channels.astype(np.uint8 if n <= 256 else np.intp)
    order = np.argsort(small, kind="stable")
    opaque = np.dtype((np.void, rows.dtype.itemsize))
    ordered = np.take(np.ascontiguousarray(rows).view(opaque), order).view(rows.dtype)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(small, minlength=n))]).tolist()
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(n)]


def split(rows: np.ndarray, partition: str, n: int, key: str, step: int) -> list[np.ndarray]:
    """``rows`` as ``n`` pieces, piece j for channel j (see the module docstring)."""
    if not len(rows):
        return [rows] * n
    if n == 1 or partition == "forward":
        return [rows] * n if partition == "broadcast" else [rows] + [rows[:0]] * (n - 1)
    if partition == "broadcast":
        return [rows] * n
    if partition == "rebalance":
        bounds = [len(rows) * i // n for i in range(n + 1)]
        pieces = [rows[bounds[i] : bounds[i + 1]] for i in range(n)]
        turn = step % n
        return pieces[n - turn :] + pieces[: n - turn]
    if partition == "hash":
        return split_rows(rows, hash_channels(rows[key], n), n)
    raise ValueError(f"unknown partition {partition!r}")


def describe_partition(edge: dict[str, Any]) -> str:
    partition = str(edge.get("partition", "forward"))
    return f"hash({edge.get('key')})" if partition == "hash" else partition
