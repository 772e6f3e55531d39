"""A ``.npy`` file written step by step, with a step index: ``FileSink``'s durable state.

Theory of operation
-------------------
The data file is a valid ``.npy`` (format 1.0) whose header has a fixed size
(room for any row count), so the header can be rewritten in place: it says 0
rows while the file is written and the final count once the stream ended. Rows
are appended with ``pwrite`` after the header.

Beside it, ``<file>.steps`` holds one pair of int64 per step the sink has
taken: (steps taken, data length after them). A step's rows are written first,
its index entry second, and only then is the step acknowledged upstream. So
after a kill -9 at any moment, the last index entry whose length the data file
reaches names a consistent point: the file is cut back to that length (dropping
a torn or unindexed tail) and the sink resumes from that step; the upstream
still holds every step after it (it drops a step only when acknowledged).

Both files are opened with ``O_NOFOLLOW`` (a symlink planted at the output path
is refused, not followed) and the data file is ``flock``-ed for the life of the
sink: a zombie sink (its executor declared dead, its worker still running)
keeps the lock until it is stopped, and its replacement waits for it.
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

import numpy as np

MAGIC = b"\x93NUMPY\x01\x00"
INDEX_ENTRY = np.dtype([("steps", "<i8"), ("length", "<i8")])
FILE_MODE = 0o644


def header_bytes(dtype: np.dtype[Any], rows: int) -> bytes:
    """A format 1.0 header for ``rows`` rows of ``dtype``, always the same length for a dtype."""
    descr = np.lib.format.dtype_to_descr(dtype)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({rows},), }}"
    room = len(text.replace(f"({rows},)", f"({10**19},)"))  # the longest count
    total = -(-(len(MAGIC) + 2 + room + 1) // 64) * 64
    text = text.ljust(total - len(MAGIC) - 2 - 1) + "\n"
    return MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


def open_nofollow(path: str, flags: int) -> int:
    """``os.open`` that refuses a symlink at ``path`` (a one-line ``OSError``)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise OSError(f"{path} is a symbolic link; refusing to write through it") from None
        raise exc


def safe_dir(path: str) -> None:
    """Create ``path`` (0700 if new); refuse it if it is a symlink."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.path.islink(path):
        raise OSError(f"{path} is a symbolic link; refusing to write into it")


class StepFile:
    def __init__(self, path: str, dtype: np.dtype[Any]) -> None:
        self.path = path
        self.dtype = dtype
        self.header = header_bytes(dtype, 0)
        self.fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            self.index_fd = open_nofollow(path + ".steps", os.O_RDWR | os.O_CREAT)
        except OSError:
            os.close(self.fd)
            raise
        self.length = len(self.header)
        self.steps = 0
        self._index_at = 0

    def try_lock(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        for name in ("fd", "index_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)  # releases the lock
                setattr(self, name, -1)

    @property
    def rows(self) -> int:
        return (self.length - len(self.header)) // self.dtype.itemsize

    def start_fresh(self) -> None:
        """Nothing of this job is in the files: empty them."""
        os.ftruncate(self.index_fd, 0)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, self.header, 0)
        self.length, self.steps, self._index_at = len(self.header), 0, 0

    def recover(self) -> int:
        """Cut both files back to the last consistent step (module docstring); the step."""
        size = os.fstat(self.fd).st_size
        raw = os.pread(self.index_fd, os.fstat(self.index_fd).st_size, 0)
        entries = np.frombuffer(raw[: len(raw) - len(raw) % INDEX_ENTRY.itemsize], INDEX_ENTRY)
        usable = np.flatnonzero(entries["length"] <= size)
        if size < len(self.header) or not len(usable):
            self.start_fresh()
            return 0
        last = int(usable[-1])
        self.steps = int(entries["steps"][last])
        self.length = int(entries["length"][last])
        self._index_at = (last + 1) * INDEX_ENTRY.itemsize
        os.ftruncate(self.index_fd, self._index_at)
        os.ftruncate(self.fd, self.length)
        return self.steps

    def append_step(self, pieces: list[np.ndarray]) -> None:
        """The rows of one step (maybe none), then its index entry."""
        for rows in pieces:
            view = np.ascontiguousarray(rows).view(np.uint8).data
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], self.length + done)
            self.length += len(view)
        self.steps += 1
        entry = np.array([(self.steps, self.length)], INDEX_ENTRY).tobytes()
        os.pwrite(self.index_fd, entry, self._index_at)
        self._index_at += len(entry)

    def seal(self) -> int:
        """Write the final row count into the header; the number of rows."""
        os.pwrite(self.fd, header_bytes(self.dtype, self.rows), 0)
        return self.rows
