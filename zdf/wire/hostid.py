"""Which processes share a host: the identity that decides ipc:// against tcp://.

Theory of operation. A data socket bound on tcp:// may also be bound on an ipc://
path (``zdf.runtime.hubaddr``), and a peer that dials it should take the ipc:// one
only when that path means the same socket file on its side, and when the pipe would
not have crossed a network on tcp:// anyway. Two processes agree on both when they
run under one kernel (``/proc/sys/kernel/random/boot_id``), in one network namespace
(a container or a namespaced test host is a host of its own: a fault cut between two
namespaces must cut their pipes too) and in one mount namespace (the path resolves to
the same file). The identity is a digest of the three; it is published with the
ipc:// path, and a dialer compares it with its own.

The namespace inodes alone repeat from machine to machine (every host's first
network namespace has the same number), the boot id does not; a boot id alone would
call every container on a machine one host. Where ``/proc`` does not say (not Linux),
the identity is empty and matches nothing: such processes dial tcp://.
"""

from __future__ import annotations

import functools
import hashlib
import os

BOOT_ID = "/proc/sys/kernel/random/boot_id"
NAMESPACES = ("/proc/self/ns/net", "/proc/self/ns/mnt")


def boot_id() -> str:
    """The running kernel's boot id (one per machine and boot); OSError where ``/proc``
    does not say."""
    with open(BOOT_ID, encoding="ascii") as fh:
        return fh.read().strip()


@functools.lru_cache(maxsize=1)
def _cached(pid: int) -> str:
    try:
        parts = [boot_id()]
        for path in NAMESPACES:
            info = os.stat(path)
            parts.append(f"{info.st_dev}:{info.st_ino}")
    except OSError:
        return ""
    return hashlib.blake2b("/".join(parts).encode(), digest_size=8).hexdigest()


def host_identity() -> str:
    """This process's host identity (hex), or "" where it cannot be known."""
    return _cached(os.getpid())  # keyed by pid: a forked child may have unshared since
