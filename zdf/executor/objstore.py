"""A worker's object store: the results of its function tasks, kept where they were made.

Theory of operation. A function task's result stays in the worker process that
computed it, as the Python object the function returned (a numpy array is the
very array, not a copy), until the master says no client future and no pending
task refers to it any more (``fn_drop``). A task that takes it as an input on
this worker gets that object; one on another worker fetches it
(``zdf.executor.objtransfer``). Values scattered by a client (``client.scatter``)
are kept here the same way.

The store is a ``MutableMapping`` from a store key (the master's task key, or a
string for tasks run under a lease and for scattered values) to the value,
with two properties the worker reports to the master: ``memory_bytes`` (what
its values hold) and ``over_limit`` (above the worker's memory limit: the
master then places new work elsewhere). ``make_store`` is the one place a
store is made: a store that spills to disk above ``memory_limit`` plugs in
there with the same interface.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

MAX_SIZE_DEPTH = 4  # containers are sized this deep (beyond: their own size only)


def value_bytes(value: Any, depth: int = 0) -> int:
    """About how many bytes ``value`` holds: exact for arrays and bytes, an estimate
    for containers (summed a few levels deep) and other objects."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray | memoryview | str):
        return len(value)
    if depth < MAX_SIZE_DEPTH:
        if isinstance(value, list | tuple | set | frozenset):
            return sys.getsizeof(value) + sum(value_bytes(v, depth + 1) for v in value)
        if isinstance(value, dict):
            return sys.getsizeof(value) + sum(
                value_bytes(k, depth + 1) + value_bytes(v, depth + 1) for k, v in value.items()
            )
    return sys.getsizeof(value)


class MemoryStore(MutableMapping[Any, Any]):
    """Values in this process's memory, with the bytes they hold counted."""

    def __init__(self, memory_limit: int = 0) -> None:
        self.memory_limit = memory_limit  # 0: none
        self._values: dict[Any, Any] = {}
        self._sizes: dict[Any, int] = {}
        self.memory_bytes = 0

    @property
    def over_limit(self) -> bool:
        return bool(self.memory_limit) and self.memory_bytes > self.memory_limit

    def __getitem__(self, key: Any) -> Any:
        return self._values[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        size = value_bytes(value) if value is not None else 0
        old = self._sizes.get(key)
        if old is not None:
            self.memory_bytes -= old
        self._values[key] = value
        self._sizes[key] = size
        self.memory_bytes += size

    def __delitem__(self, key: Any) -> None:
        del self._values[key]
        self.memory_bytes -= self._sizes.pop(key)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def give_back_memory() -> None:
    """Hand the heap that dropped values freed back to the system (glibc keeps freed
    blocks below its mmap threshold, so the worker's RSS would not fall otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_current: list[MemoryStore] = []  # this process's store (a worker makes one)


def make_store(memory_limit: int = 0, spill_dir: str = "") -> MemoryStore:
    """The worker's object store. ``memory_limit`` (bytes, 0: none) sets ``over_limit``;
    ``spill_dir`` is where a spilling store would write (this one keeps all in memory)."""
    del spill_dir  # a spilling store plugs in here
    store = MemoryStore(memory_limit)
    _current[:] = [store]
    return store


def current_store() -> MemoryStore | None:
    """The store of this worker process (for tasks that report on it, as in the tests)."""
    return _current[0] if _current else None
