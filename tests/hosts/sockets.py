"""What a host's kernel says about its sockets: /proc/PID/net/{tcp,unix} of a process
on that host (each lists the sockets of the process's network namespace).

The namespaced tests read them to tell how a data pipe travels from the socket
itself, not from timing: an accepted connection on a hub's ipc:// twin is a dialer
on its host; an established tcp:// connection on the hub's port names the host it
came from.
"""

from __future__ import annotations

import socket
import struct

ESTABLISHED = "01"  # /proc/net/tcp's st
CONNECTED = "03"  # /proc/net/unix's St (SS_CONNECTED); a listener is 01


def _ipv4(hex_addr: str) -> tuple[str, int]:
    ip, port = hex_addr.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16)


def tcp_peers(pid: int, ip: str, port: int) -> list[str]:
    """The remote addresses of the established tcp connections to ``ip:port`` in the
    namespace of ``pid``."""
    peers = []
    with open(f"/proc/{pid}/net/tcp", encoding="ascii") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if fields[3] == ESTABLISHED and _ipv4(fields[1]) == (ip, port):
                peers.append(_ipv4(fields[2])[0])
    return peers


def unix_accepted(pid: int, path: str) -> int:
    """Connections accepted on the Unix socket bound at ``path`` (in ``pid``'s namespace)."""
    count = 0
    with open(f"/proc/{pid}/net/unix", encoding="utf-8", errors="replace") as fh:
        next(fh)
        for line in fh:
            fields = line.split(maxsplit=7)
            if len(fields) == 8 and fields[7].strip() == path and fields[5] == CONNECTED:
                count += 1
    return count
