"""Where an executor's worker processes bind their data sockets (ipc://).

A 1,000-table benchmark job binds a thousand producer sockets at its start, and
binding (and later unlinking) a Unix socket costs what the file system makes of a
new inode: about 0.35 ms each on a disk (ext4) here, 0.07 ms on a tmpfs. So the
data sockets go to a private directory made on ``/dev/shm`` when the machine has
one (Linux), else to the executor's run directory as before. The directory is the
executor's alone (0700, a fresh name naming the executor's pid) and removed when
it closes; one left by an executor that was killed holds nothing but dead socket
files, and the next executor to start removes it (``sweep``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

import psutil

from zdf.files import private_dir

TMPFS = "/dev/shm"
_NAME = re.compile(r"zdf-(\d+)-[A-Za-z0-9_]+")


def data_socket_dir(run_dir: str) -> tuple[str, bool]:
    """A directory for data sockets, and whether it is a fresh one to remove at close."""
    if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK | os.X_OK):
        try:
            sweep(TMPFS)
            return tempfile.mkdtemp(prefix=f"zdf-{os.getpid()}-", dir=TMPFS), True
        except OSError:
            pass
    return private_dir(run_dir), False


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sweep(root: str) -> list[str]:
    """Remove the socket directories in ``root`` that this user's executors left when
    they were killed (their pid is gone); return them."""
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        match = _NAME.fullmatch(name)
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        path = os.path.join(root, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
