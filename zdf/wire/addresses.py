"""Bound addresses and advertised ones.

A process binds what its config says (``0.0.0.0:10240``, a container's own
address) and tells others where to dial (``advertise-addr``, DESIGN.md "Several
hosts"). These helpers keep that translation in one place: the host of an
address, whether it is loopback (a cluster whose every advertised address is
loopback lives on one machine, where ipc:// may stand in for tcp://), and a bound
``tcp://`` URL rewritten to its advertised host.
"""

from __future__ import annotations

import ipaddress
import re

WILDCARDS = ("0.0.0.0", "::", "*", "[::]")


def host_of(addr: str) -> str:
    """``host:port`` or ``tcp://host:port`` -> host."""
    rest = addr.split("://", 1)[-1]
    return rest.rpartition(":")[0]


def is_wildcard(addr: str) -> bool:
    return host_of(addr) in WILDCARDS


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_TCP = re.compile(r"tcp://(\[[^\]]*\]|[^/?#\[\]]*):")


def advertised(url: str, public_host: str) -> str:
    """A bound ``tcp://host:port`` (as ``LAST_ENDPOINT`` gives it) with ``public_host``
    in place of its host, whatever follows the port (a hub's ``?ipc=...`` twin, a
    pipe's ``#port``); other transports are returned as they are."""
    if not public_host:
        return url
    return _TCP.sub(f"tcp://{public_host}:", url, count=1) if _TCP.match(url) else url
