"""Same-host handoff of a stored value through shared memory (as Ray's plasma store).

Theory of operation. A worker fetching an input from another worker on the same
host need not have its bytes pushed through a socket: the holder writes the
value's ``zdf.wire.payload`` frames once into a file on the host's tmpfs
(``/dev/shm``), its *home*, and answers the fetch with the file's name only;
the reader maps the file read-only (``MAP_POPULATE``: its pages are wired at
once, not faulted one by one) and rebuilds the value as views on the map (a
numpy array is a read-only view: no copy). The holder then keeps the value as
a map of that file too (``zdf.executor.objtransfer``), so the value is in
memory once, shared by the holder and every reader on the host, and a second
fetch costs no write. The file is removed when the value is released from the
holder's store (``release``); a reader's map keeps its pages until it lets go.

*Same host* is decided by ``host_identity()``: the kernel's boot id, the device of
the tmpfs mounted at ``/dev/shm`` (another mount namespace with a tmpfs of its
own sees another device) and the user id (the files are 0600). A fetch carries
the reader's identity; the holder hands off only when it is its own. Whatever
still goes wrong (the file cannot be opened, its size is not what was said)
makes the reader ask again without its identity: the value then travels over
the network path (``zdf.executor.objtransfer``), as it does between hosts.

Files and bounds (the holder's ``Handoff``). Each worker's files live in a
directory of its own, ``/dev/shm/zdf-<pid>-obj<random>`` (0700, like the data
socket directories of ``zdf.executor.sockdir``): its files are created 0600
with ``O_EXCL | O_NOFOLLOW`` under random names, and a reader takes only names
of that shape (no path travels). The directory is removed when the worker
closes its store port; one left by a killed worker is removed by the next
worker or executor to start, and by every executor as it stops
(``sockdir.sweep``: its pid is gone). /dev/shm is memory and often small:
values under ``MIN_BYTES`` are not worth a file (the socket is as fast); one
holder's files never hold more than ``MAX_SHARE`` of the tmpfs, a write never
leaves less than ``KEEP_FREE`` of it free, and a write that fails (``ENOSPC``:
another process filled it meanwhile) removes its file; in each case the value
travels over the network path instead. ``ZDF_SHM_HANDOFF=0`` in a worker's
environment turns the handoff off (the benches measure the network path so).
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from zdf.executor import sockdir
from zdf.files import open_nofollow
from zdf.wire.chunked import ALIGN, frame_view
from zdf.wire.hostid import boot_id

log = logging.getLogger(__name__)

SHM_ROOT = sockdir.TMPFS
MIN_BYTES = 1 << 20  # smaller values go over the socket: a file is not worth it
MAX_SHARE = 0.5  # of the tmpfs: the most one holder's files not yet taken may hold
KEEP_FREE = 0.1  # of the tmpfs: a write never leaves less than this free
MAX_WRITE = 1 << 30  # bytes per pwrite call
DISABLE_ENV = "ZDF_SHM_HANDOFF"  # "0": every value takes the network path (A/B benches)

_DIR = re.compile(r"zdf-\d+-obj[A-Za-z0-9_]+")
_FILE = re.compile(r"[0-9a-f]{32}")


def host_identity(root: str = SHM_ROOT) -> str:
    """This host's identity for a handoff: boot id, the tmpfs's device, the user
    ("" when there is no usable tmpfs, or ``ZDF_SHM_HANDOFF=0``: never hand off)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return ""
    try:
        boot = boot_id()
        device = os.stat(root).st_dev
    except OSError:
        return ""
    if not os.access(root, os.W_OK | os.X_OK):
        return ""
    return f"{boot}:{device}:{os.getuid()}"


def layout(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Where each frame starts in a handoff file (64-byte aligned), and its length."""
    starts, end = [], 0
    for size in sizes:
        starts.append(end)
        end += -(-size // ALIGN) * ALIGN
    return starts, end


class Handoff:
    """The holder's side: writes values' frames to files a reader on this host maps,
    one file per value (its *home*), kept until the value is released."""

    def __init__(self, root: str = SHM_ROOT) -> None:
        self.root = root
        self.identity = host_identity(root)
        self.dir = ""
        self._homes: dict[Any, dict[str, Any]] = {}  # store key: its file's ref
        self._lock = threading.Lock()  # offered from the store port, released from the worker
        self.written = 0  # files written so far
        self.declined = 0  # values that went over the network path instead
        if not self.identity:
            return
        sockdir.sweep(root)  # what killed workers and executors left here
        try:
            self.dir = tempfile.mkdtemp(prefix=f"zdf-{os.getpid()}-obj", dir=root)  # 0700
        except OSError as exc:
            log.info("no shared-memory handoff: %s", exc)
            self.identity = ""

    def home_of(self, key: Any) -> dict[str, Any] | None:
        """The ref of ``key``'s file, if it has one already."""
        with self._lock:
            return self._homes.get(key)

    def offer(self, key: Any, frames: Sequence[Any]) -> dict[str, Any] | None:
        """Write ``frames`` (the value of ``key``) to a new file; what a reader needs to
        map it, or None: too small, over the bounds, or not written (the network
        path then)."""
        views = [frame_view(f) for f in frames]
        sizes = [v.nbytes for v in views]
        starts, total = layout(sizes)
        if not self.dir or sum(sizes) < MIN_BYTES:
            return None
        if not self._room(total):
            self.declined += 1
            return None
        name = secrets.token_hex(16)
        path = os.path.join(self.dir, name)
        try:
            fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                os.ftruncate(fd, total)
                for view, start in zip(views, starts, strict=True):
                    _write_at(fd, view, start)
            finally:
                os.close(fd)
        except OSError as exc:  # ENOSPC: someone filled the tmpfs meanwhile
            log.info("shared-memory handoff of %d bytes not written (%s)", total, exc)
            _unlink(path)
            self.declined += 1
            return None
        ref = {"dir": os.path.basename(self.dir), "file": name, "sizes": sizes}
        with self._lock:
            old = self._homes.pop(key, None)
            self._homes[key] = ref
        if old is not None:
            _unlink(os.path.join(self.dir, old["file"]))
        self.written += 1
        return ref

    def release(self, key: Any) -> None:
        """``key``'s value is gone from the store: its file goes (readers that mapped it
        keep their pages until they let go of them)."""
        with self._lock:
            ref = self._homes.pop(key, None)
        if ref is not None and self.dir:
            _unlink(os.path.join(self.dir, ref["file"]))

    def _room(self, total: int) -> bool:
        try:
            fs = os.statvfs(self.root)
        except OSError:
            return False
        size = fs.f_blocks * fs.f_frsize
        free = fs.f_bavail * fs.f_frsize
        return self.held_bytes + total <= size * MAX_SHARE and free - total >= size * KEEP_FREE

    @property
    def held_bytes(self) -> int:
        """Bytes of the files this holder keeps."""
        with self._lock:
            refs = list(self._homes.values())
        return sum(layout(ref["sizes"])[1] for ref in refs)

    def close(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""
        with self._lock:
            self._homes.clear()


def take(ref: Any, root: str = SHM_ROOT) -> list[memoryview]:
    """The reader's side: map the file ``ref`` names (``Handoff.offer``'s answer) and
    return its frames as read-only views of the map. ``OSError`` when it cannot be
    had (the caller then asks for the value over the network)."""
    if not isinstance(ref, dict):
        raise OSError("a handoff without its file")
    dirname, name, sizes = ref.get("dir"), ref.get("file"), ref.get("sizes")
    if not (
        isinstance(dirname, str)
        and _DIR.fullmatch(dirname)
        and isinstance(name, str)
        and _FILE.fullmatch(name)
        and isinstance(sizes, list)
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes)
    ):
        raise OSError("a handoff naming no file of ours")
    path = os.path.join(root, dirname, name)
    starts, total = layout(sizes)
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(f"{path}: not a file of ours")
        if info.st_size != total:
            raise OSError(f"{path}: {info.st_size} bytes where {total} were said")
        mapped = (
            mmap.mmap(
                fd,
                total,
                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                prot=mmap.PROT_READ,
            )
            if total
            else b""
        )
    finally:
        os.close(fd)
    view = memoryview(mapped)
    return [view[start : start + size] for start, size in zip(starts, sizes, strict=True)]


def _write_at(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < view.nbytes:
        wrote = os.pwrite(fd, view[done : done + MAX_WRITE], offset + done)
        if wrote <= 0:
            raise OSError("short write")
        done += wrote


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
