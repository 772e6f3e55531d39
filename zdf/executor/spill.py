"""A worker's store of results that spills to disk above a memory limit.

Theory of operation. ``SpillStore`` is a ``MutableMapping[str, value]`` that
counts what it holds in memory (``memory_bytes``, each value weighed by
``sizeof``) against ``memory_limit``. When a new value takes it above the
*target* (``target`` of the limit, 0.6 by default, as Dask's ``spill``
threshold on managed memory), the least recently used values move to files in
the worker's spill directory until it is below again; a value bigger than the
target alone goes to disk at once. Reading a value makes it the most recently
used.

A spilled value stays on disk until it is deleted or replaced (its file is
removed then): numpy arrays are written with ``np.save`` and come back as
read-only memory maps of their file (the page cache holds them, not the
worker's heap, and the kernel drops those pages under pressure); any other
value is written as its ``zdf.wire.payload`` frames and unpacked from the file
at each read. A value that ``payload`` cannot pack, or that cannot be written
(a full disk), stays in memory: nothing is lost, the limit is passed instead.
``spilled_bytes`` counts the files' bytes.

``over_limit`` is True above the *pause* fraction (0.8) of the limit, measured
as the larger of what the store holds in memory and the process's resident
memory (``psutil``; unmanaged memory counts too, as Dask's pause threshold):
the scheduler should then send this worker no more work.

Files: the directory is made 0700 and must be this user's (``zdf.files``);
each file is created 0600 with ``O_EXCL | O_NOFOLLOW`` under a name derived
from a hash of its key, so no key can name a path and no planted symlink is
followed; spilled arrays are mapped from a descriptor opened the same way.

``make_store(memory_limit, spill_dir)`` is the factory the worker's object
store uses; ``resolve_memory_limit(config.memory_limit, workers)`` turns the
executor's ``memory-limit`` into one worker's (``"auto"``, 0: its share of this
machine's memory, ``default_memory_limit``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil

from zdf.files import open_nofollow, private_dir
from zdf.wire.chunked import frame_view
from zdf.wire.payload import pack, unpack

DEFAULT_TARGET = 0.6  # of the limit: above it, the least recently used values spill
DEFAULT_PAUSE = 0.8  # of the limit: above it, the worker is over its limit
DEFAULT_RAM_FRACTION = 0.8  # of the machine's memory, shared out among the workers
SAMPLE_ITEMS = 16  # items of a large container weighed to estimate its size
_FRAMES_MAGIC = b"ZDFSPIL1"

log = logging.getLogger(__name__)


def default_memory_limit(workers: int | None = None) -> int:
    """A worker's share of ``DEFAULT_RAM_FRACTION`` of this machine's memory."""
    share = max(1, workers or os.cpu_count() or 1)
    return int(psutil.virtual_memory().total * DEFAULT_RAM_FRACTION / share)


def resolve_memory_limit(configured: int, workers: int) -> int:
    """The executor's ``memory-limit`` for one of its ``workers`` (0: "auto")."""
    return configured if configured > 0 else default_memory_limit(workers)


def sizeof(value: Any, depth: int = 3) -> int:
    """Bytes ``value`` holds, roughly: exact for arrays and bytes, sampled for large
    containers (as Dask's ``sizeof``)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value) + 49
    if depth > 0 and isinstance(value, list | tuple | set | frozenset | dict):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        if not items:
            return sys.getsizeof(value)
        step = max(1, len(items) // SAMPLE_ITEMS)
        sample = items[::step][:SAMPLE_ITEMS]
        weigh = sum(sizeof(item, depth - 1) for item in sample)
        return sys.getsizeof(value) + weigh * len(items) // len(sample)
    return sys.getsizeof(value)


class SpillStore(MutableMapping[str, Any]):
    """Values in memory up to a target, the least recently used on disk beyond it."""

    def __init__(
        self,
        memory_limit: int,
        spill_dir: Path,
        *,
        target: float = DEFAULT_TARGET,
        pause: float = DEFAULT_PAUSE,
        process_memory: Callable[[], int] | None = None,
    ) -> None:
        if memory_limit < 1 or not 0 < target <= pause:
            raise ValueError("need memory_limit >= 1 and 0 < target <= pause")
        self.memory_limit = memory_limit
        self.target_bytes = int(memory_limit * target)
        self.pause_bytes = int(memory_limit * pause)
        self.spill_dir = Path(private_dir(str(spill_dir)))
        self._process_memory = process_memory or _resident_memory
        self._memory: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # LRU first
        self._disk: dict[str, tuple[Path, int]] = {}  # key: (file, its bytes)
        self.memory_bytes = 0
        self.spilled_bytes = 0
        self.spills = 0  # values moved to disk so far

    # -- the mapping ------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            del self[key]
        size = sizeof(value)
        if size > self.target_bytes and self._spill(key, value):
            return
        self._memory[key] = (value, size)
        self.memory_bytes += size
        self._evict()

    def __getitem__(self, key: str) -> Any:
        held = self._memory.get(key)
        if held is not None:
            self._memory.move_to_end(key)
            return held[0]
        path, _ = self._disk[key]  # KeyError when absent, as a mapping should
        return _read(path)

    def __delitem__(self, key: str) -> None:
        held = self._memory.pop(key, None)
        if held is not None:
            self.memory_bytes -= held[1]
            return
        path, size = self._disk.pop(key)
        self.spilled_bytes -= size
        path.unlink(missing_ok=True)

    def __contains__(self, key: object) -> bool:
        return key in self._memory or key in self._disk

    def __iter__(self) -> Iterator[str]:
        yield from list(self._memory)
        yield from list(self._disk)

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    # -- limits -----------------------------------------------------------------
    @property
    def over_limit(self) -> bool:
        """Above the pause fraction: the scheduler should give this worker no work."""
        return max(self.memory_bytes, self._process_memory()) > self.pause_bytes

    def is_spilled(self, key: str) -> bool:
        return key in self._disk

    def replace_in_memory(self, key: str, old: Any, new: Any) -> bool:
        """Hold ``new`` for ``key`` in memory, at the same size and LRU place, while
        ``old`` is what it holds there (not on disk); whether it did."""
        held = self._memory.get(key)
        if held is None or held[0] is not old:
            return False
        self._memory[key] = (new, held[1])
        return True

    def close(self) -> None:
        """Remove every spilled file (the values in memory are simply dropped)."""
        for key in list(self._disk):
            del self[key]
        self._memory.clear()
        self.memory_bytes = 0

    # -- spilling -----------------------------------------------------------------
    def _evict(self) -> None:
        """Spill the least recently used values until below the target."""
        unspillable: list[str] = []
        while self.memory_bytes > self.target_bytes and self._memory:
            key, (value, size) = next(iter(self._memory.items()))
            del self._memory[key]
            self.memory_bytes -= size
            if not self._spill(key, value):
                unspillable.append(key)
                self._memory[key] = (value, size)
                self.memory_bytes += size
                if len(unspillable) >= len(self._memory):
                    break  # nothing left that can go
        for key in reversed(unspillable):  # they stay, and keep their old place
            self._memory.move_to_end(key, last=False)

    def _spill(self, key: str, value: Any) -> bool:
        """Write ``value`` to its file; False when it cannot be written (kept in memory)."""
        path = self.spill_dir / (hashlib.blake2b(key.encode(), digest_size=16).hexdigest())
        try:
            if isinstance(value, np.ndarray) and not value.dtype.hasobject:
                path = path.with_suffix(".npy")
                with _create(path) as fh:
                    np.save(fh, value, allow_pickle=False)
            else:
                frames = pack(value)
                path = path.with_suffix(".frames")
                with _create(path) as fh:
                    _write_frames(fh, frames)
        except (TypeError, ValueError, OverflowError):
            path.unlink(missing_ok=True)
            return False
        except OSError as exc:  # a full disk, a planted file: keep it, say so
            log.warning("cannot spill a value to %s: %s", path, exc)
            return False
        size = path.stat().st_size
        self._disk[key] = (path, size)
        self.spilled_bytes += size
        self.spills += 1
        return True


def make_store(memory_limit: int | None, spill_dir: Path) -> SpillStore:
    """A worker's result store: spills above ``memory_limit`` bytes (None: this
    worker's share of the machine, ``default_memory_limit()``) into ``spill_dir``."""
    limit = default_memory_limit() if memory_limit is None else memory_limit
    return SpillStore(limit, spill_dir)


def _resident_memory() -> int:
    return int(psutil.Process().memory_info().rss)


def _create(path: Path) -> Any:
    """A new file, 0600, never through a symlink, never over an existing file."""
    fd = open_nofollow(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    return os.fdopen(fd, "wb")


def _write_frames(fh: Any, frames: list[Any]) -> None:
    views = [frame_view(f) for f in frames]
    fh.write(_FRAMES_MAGIC + struct.pack("<Q", len(views)))
    fh.write(np.array([v.nbytes for v in views], dtype="<u8").tobytes())
    for view in views:
        fh.write(view)


def _read(path: Path) -> Any:
    fd = open_nofollow(str(path), os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        if path.suffix == ".npy":
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            order: Literal["F", "C"] = "F" if fortran else "C"
            if 0 in shape:  # nothing to map
                return np.empty(shape, dtype=dtype, order=order)
            offset = fh.tell()
            return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)  # type: ignore[call-overload]
        head = fh.read(len(_FRAMES_MAGIC) + 8)
        count = struct.unpack("<Q", head[len(_FRAMES_MAGIC) :])[0]
        sizes = np.frombuffer(fh.read(8 * count), dtype="<u8")
        data = memoryview(fh.read())
    frames, start = [], 0
    for size in sizes.tolist():
        frames.append(data[start : start + size])
        start += size
    return unpack(frames)
