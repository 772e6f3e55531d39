"""A hub's address with an ipc:// twin, and which of the two a peer dials.

Theory of operation
-------------------
On several hosts a process's data hub (``zdf.runtime.hub``) binds tcp://, so that
any host reaches it; but its readers are often on its own host (the other workers of
its executor), where tcp:// costs a loopback round through the TCP stack and, when
the cluster is secured, CURVE on every batch. So the hub also binds an ipc:// twin in
its executor's private socket directory, and publishes both::

    tcp://10.0.0.2:41234?ipc=/dev/shm/zdf-812-x1y2/3f2a….sock&host=9c41…

``host`` is the binder's host identity (``zdf.wire.hostid``: boot id, network and
mount namespaces). A dialer takes the twin only when (in order):

1. the identity is its own (same kernel, same network namespace: a pipe between two
   namespaced hosts, or two containers, stays on tcp:// where faults and firewalls
   apply to it; same mount namespace: the path is the same file), and
2. something listens at the path now: a non-blocking connect to it is not refused.
   A dead peer's socket file (a worker killed before it could unlink it) refuses at
   once, so it is never dialed; the dialer takes tcp://, where the peer's death is
   handled as it always was (the pipe waits for the task's new address).

Else it dials the tcp:// address, as every process can. A socket bound in this very
process is reached over its inproc alias (``zdf.wire.inproc``) before either.

Security: the twin is plain ZeroMQ (no CURVE, no ZAP), as every ipc:// socket of zdf
is: it is reachable only through the executor's socket directory, made 0700 for the
user running zdf (``zdf.executor.sockdir``), so no other user can connect to it;
the tcp:// endpoint of the same socket stays CURVE (``zdf.wire.security.bind_plain``).

Bind specs use the same form: ``tcp://HOST:*?ipc=DIR/`` binds tcp:// and a new
socket file in DIR.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import quote, unquote

from zdf.wire import inproc
from zdf.wire.hostid import host_identity

IPC_KEY = "ipc"
HOST_KEY = "host"
INPROC, IPC, TCP = "inproc", "ipc", "tcp"


@dataclass(frozen=True)
class HubAddress:
    """A published hub address: where anyone dials, and the same-host twin if any."""

    primary: str
    ipc_path: str = ""
    host: str = ""

    @property
    def twin(self) -> str:
        return f"ipc://{self.ipc_path}" if self.ipc_path else ""

    def __str__(self) -> str:
        if not self.ipc_path:
            return self.primary
        return f"{self.primary}?{IPC_KEY}={quote(self.ipc_path, safe='/')}&{HOST_KEY}={self.host}"


def parse(url: str) -> HubAddress:
    """A hub address (no port id) -> its parts; a plain URL has no twin."""
    primary, sep, query = url.partition("?")
    if not sep:
        return HubAddress(url)
    fields = dict(item.partition("=")[::2] for item in query.split("&"))
    return HubAddress(primary, unquote(fields.get(IPC_KEY, "")), fields.get(HOST_KEY, ""))


def twin_spec(primary: str, ipc_dir: str) -> str:
    """Bind ``primary`` (tcp://HOST:*) and a socket file in ``ipc_dir`` beside it."""
    return f"{primary}?{IPC_KEY}={quote(ipc_dir.rstrip('/') + '/', safe='/')}"


def split_spec(spec: str) -> tuple[str, str]:
    """A bind spec -> (what to bind first, the twin's directory or "")."""
    address = parse(spec)
    return address.primary, address.ipc_path


def listening(path: str) -> bool:
    """Whether a Unix socket at ``path`` accepts connections now (never blocks)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except BlockingIOError:  # a full backlog: alive, only busy
        return True
    except OSError:  # refused (stale), missing, not ours to reach, too long...
        return False
    finally:
        probe.close()
    return True


def choose(url: str) -> tuple[str, str]:
    """Where this process dials the hub at ``url``, and over what (``INPROC``, ``IPC``
    or ``TCP``; a plain ipc:// hub address, on one machine, is ``IPC``)."""
    address = parse(url)
    for key in (address.twin, url):
        if key:
            alias = inproc.route(key)
            if alias != key:
                return alias, INPROC
    mine = host_identity()
    if address.ipc_path and address.host == mine and mine and listening(address.ipc_path):
        return address.twin, IPC
    return address.primary, IPC if address.primary.startswith("ipc://") else TCP
