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
store is made. A worker's store spills to disk (``zdf.executor.spill``): given a
``spill_dir``, ``make_store`` wraps a ``SpillStore`` in a ``SpillingStore``, which
turns each store key into the spill store's string keys (``store_key``: an int
``7`` is ``"i:7"``, a string ``"lease:3"`` is ``"s:lease:3"``; no two keys meet)
and serialises access with a lock (the store port serves it from its own thread,
``zdf.executor.objtransfer``, and a read moves a value in the spill store's LRU
order). Without a spill dir (unit tests) the store keeps everything in memory.

Shared memory (``zdf.executor.shmhandoff``): a value handed to a reader on the
same host lives on in a file on the tmpfs; the store port swaps the store's
value for a map of that file (``rehome``: the same value, held once) and is
told through ``on_delete`` when the key is deleted or replaced, so that the
file goes with the value.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from zdf.executor.spill import SpillStore, resolve_memory_limit

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
        self.on_delete: list[Callable[[Any], None]] = []  # called with a key deleted or replaced

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
            _deleted(self.on_delete, key)
        self._values[key] = value
        self._sizes[key] = size
        self.memory_bytes += size

    def __delitem__(self, key: Any) -> None:
        del self._values[key]
        self.memory_bytes -= self._sizes.pop(key)
        _deleted(self.on_delete, key)

    def rehome(self, key: Any, old: Any, new: Any) -> bool:
        """Hold ``new`` (the same value, elsewhere: a shared-memory map) for ``key``
        while ``old`` is still what it holds; whether it did."""
        if self._values.get(key) is not old:
            return False
        self._values[key] = new
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def close(self) -> None:
        self._values.clear()
        self._sizes.clear()
        self.memory_bytes = 0


def store_key(key: Any) -> str:
    """The spill store's string key for a store key (an int or a string)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"i:{key}"
    if isinstance(key, str):
        return f"s:{key}"
    raise TypeError(f"a store key is an int or a string, not {type(key).__name__}")


def from_store_key(key: str) -> Any:
    return int(key[2:]) if key.startswith("i:") else key[2:]


class SpillingStore(MutableMapping[Any, Any]):
    """The worker's store over a ``SpillStore``: its keys converted, its access locked."""

    def __init__(self, spill: SpillStore) -> None:
        self.spill = spill
        self._lock = threading.Lock()
        self.on_delete: list[Callable[[Any], None]] = []  # called with a key deleted or replaced

    @property
    def memory_limit(self) -> int:
        return self.spill.memory_limit

    @property
    def memory_bytes(self) -> int:
        return self.spill.memory_bytes

    @property
    def spilled_bytes(self) -> int:
        return self.spill.spilled_bytes

    @property
    def over_limit(self) -> bool:
        with self._lock:
            return self.spill.over_limit

    def is_spilled(self, key: Any) -> bool:
        with self._lock:
            return self.spill.is_spilled(store_key(key))

    def __getitem__(self, key: Any) -> Any:
        skey = store_key(key)
        with self._lock:
            return self.spill[skey]

    def __setitem__(self, key: Any, value: Any) -> None:
        skey = store_key(key)
        with self._lock:
            replaced = skey in self.spill
            self.spill[skey] = value
        if replaced:
            _deleted(self.on_delete, key)

    def __delitem__(self, key: Any) -> None:
        skey = store_key(key)
        with self._lock:
            del self.spill[skey]
        _deleted(self.on_delete, key)

    def rehome(self, key: Any, old: Any, new: Any) -> bool:
        """``MemoryStore.rehome`` (a value spilled to disk stays there)."""
        skey = store_key(key)
        with self._lock:
            return self.spill.replace_in_memory(skey, old, new)

    def __contains__(self, key: object) -> bool:
        try:
            skey = store_key(key)
        except TypeError:
            return False
        with self._lock:
            return skey in self.spill

    def __iter__(self) -> Iterator[Any]:
        with self._lock:
            keys = list(self.spill)
        return map(from_store_key, keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self.spill)

    def close(self) -> None:
        """Remove every spilled file."""
        with self._lock:
            self.spill.close()


def _deleted(hooks: list[Callable[[Any], None]], key: Any) -> None:
    for hook in hooks:
        hook(key)


def made_under(store: MutableMapping[Any, Any], leases: Any) -> list[str]:
    """The keys of ``store`` made under any of ``leases`` (``"<lease>:<tid>"``): what
    a client that is gone left there (``zdf.master.fnsessions``)."""
    if not isinstance(leases, list) or not leases:
        return []
    prefixes = tuple(f"{lease}:" for lease in leases if isinstance(lease, str))
    return [key for key in list(store) if isinstance(key, str) and key.startswith(prefixes)]


def give_back_memory() -> None:
    """Hand the heap that dropped values freed back to the system (glibc keeps freed
    blocks below its mmap threshold, so the worker's RSS would not fall otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_current: list[MemoryStore | SpillingStore] = []  # this process's store (a worker makes one)


def make_store(
    memory_limit: int = 0, spill_dir: str = "", workers: int = 1
) -> MemoryStore | SpillingStore:
    """The worker's object store. With a ``spill_dir``: values beyond ``memory_limit``
    (bytes; 0: this worker's share of the machine among ``workers``) spill to files
    there. Without: all in memory, ``memory_limit`` (0: none) only sets ``over_limit``."""
    store: MemoryStore | SpillingStore
    if spill_dir:
        limit = resolve_memory_limit(memory_limit, workers)
        store = SpillingStore(SpillStore(limit, Path(spill_dir)))
    else:
        store = MemoryStore(memory_limit)
    _current[:] = [store]
    return store


def current_store() -> MemoryStore | SpillingStore | None:
    """The store of this worker process (for tasks that report on it, as in the tests)."""
    return _current[0] if _current else None
