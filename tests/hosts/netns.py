"""Hosts for tests: Linux network namespaces joined by veth pairs to one bridge.

Theory of operation. A ``Network`` owns a bridge namespace (``<run>-br``, a bridge
``br0`` in it) and one namespace per host (``<run>-<name>``), each with a veth
``eth0`` whose peer is enslaved to the bridge; hosts get 10.77.0.2, .3, ... on a
/24. The names carry a per-run tag, so that concurrent test runs on this machine
never meet; the addresses need no such care, every run's bridge lives in its own
namespace. Nothing is created in the machine's own namespace.

Faults are nftables rules in a host's namespace (a table ``zdf_faults`` with an
input and an output chain, created on the first fault): ``cut(a, b)`` drops what
``a`` sends to and receives from ``b``, silently, as a partition does (no RST, no
ICMP: both ends keep their half-open TCP connections); ``cut_oneway(a, b)`` only
what ``a`` sends to ``b``; ``lossy(a, b, percent)`` a random share of it;
``isolate(a)`` everything but loopback; ``heal(a)`` drops the table.

``close()`` stops every process still inside the namespaces (by the pids the
kernel lists for them: only processes this run started live there) and deletes
the namespaces; it is safe to call twice, and the fixtures call it in ``finally``.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

SUBNET = "10.77.0"
BRIDGE = "br0"
FAULT_TABLE = "zdf_faults"
KILL_GRACE = 3.0


class NetnsUnavailable(Exception):
    """This machine cannot make network namespaces here (not root, no ``ip``, ...)."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def unavailable_reason() -> str | None:
    """Why namespaced tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (apt-get install iproute2 nftables)"
    probe = f"zdfprobe-{os.getpid()}-{secrets.token_hex(3)}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        table = _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "t", check=False)
        if table.returncode != 0:
            return f"nftables does not work in a namespace: {table.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    ns: str
    ip: str

    @property
    def prefix(self) -> list[str]:
        """What starts a command on this host."""
        return ["ip", "netns", "exec", self.ns]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.prefix, *args, check=check)


class Network:
    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"zdf{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.tag}-br"
        self.hosts: dict[str, Host] = {}
        self._faulted: set[str] = set()
        self._namespaces: list[str] = []
        atexit.register(self.close)  # an interrupted run leaves no namespace behind
        try:
            self._add_ns(self.bridge_ns)
            self._in_bridge("ip", "link", "add", BRIDGE, "type", "bridge")
            self._in_bridge("ip", "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def _in_bridge(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.bridge_ns, *args)

    def host(self, name: str) -> Host:
        """The host called ``name``, made on first use."""
        if name in self.hosts:
            return self.hosts[name]
        index = len(self._namespaces) + 1  # never reused within a run
        if index > 250:
            raise RuntimeError("too many hosts for one /24")
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{index}")
        self._add_ns(host.ns)  # recorded first: close() deletes it if the rest fails
        port = f"v{index}"  # inside the bridge namespace: no other run sees it
        _run(
            "ip", "link", "add", "eth0", "netns", host.ns,
            "type", "veth", "peer", "name", port, "netns", self.bridge_ns,
        )  # fmt: skip
        self._in_bridge("ip", "link", "set", port, "master", BRIDGE)
        self._in_bridge("ip", "link", "set", port, "up")
        host.run("ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    # -- faults ------------------------------------------------------------
    def _table(self, host: Host) -> None:
        if host.ns in self._faulted:
            return
        script = (
            f"add table inet {FAULT_TABLE}\n"
            f"add chain inet {FAULT_TABLE} in {{ type filter hook input priority 0 ; }}\n"
            f"add chain inet {FAULT_TABLE} out {{ type filter hook output priority 0 ; }}\n"
        )
        self._nft(host, script)
        self._faulted.add(host.ns)

    def _nft(self, host: Host, script: str) -> None:
        proc = subprocess.run(
            [*host.prefix, "nft", "-f", "-"], input=script, capture_output=True, text=True,
            timeout=20,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"nft in {host.ns}: {proc.stderr.strip()}")

    def cut_oneway(self, a: Host, b: Host) -> None:
        """Drop what ``a`` sends to ``b`` (``b`` still reaches ``a``'s input... and gets no answer
        over TCP, but its datagrams and SYNs arrive)."""
        self._table(a)
        self._nft(a, f"add rule inet {FAULT_TABLE} out ip daddr {b.ip} drop\n")

    def cut(self, a: Host, b: Host) -> None:
        """A partition between ``a`` and ``b``: nothing passes either way."""
        self._table(a)
        self._nft(
            a,
            f"add rule inet {FAULT_TABLE} out ip daddr {b.ip} drop\n"
            f"add rule inet {FAULT_TABLE} in ip saddr {b.ip} drop\n",
        )

    def lossy(self, a: Host, b: Host, percent: int) -> None:
        """Drop ``percent`` % of what ``a`` sends to ``b``, at random (nftables ``numgen``:
        this stands in for netem's ``loss``, which some kernels lack)."""
        self._table(a)
        share = f"numgen random mod 100 < {percent}"
        self._nft(a, f"add rule inet {FAULT_TABLE} out ip daddr {b.ip} {share} counter drop\n")

    def dropped(self, a: Host) -> int:
        """Packets dropped by ``a``'s rules that count (``lossy``)."""
        if a.ns not in self._faulted:
            return 0
        listing = a.run("nft", "list", "table", "inet", FAULT_TABLE).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

    def isolate(self, a: Host) -> None:
        """``a`` reaches no other host and no other host reaches it."""
        self._table(a)
        self._nft(
            a,
            f"add rule inet {FAULT_TABLE} out oifname eth0 drop\n"
            f"add rule inet {FAULT_TABLE} in iifname eth0 drop\n",
        )

    def heal(self, a: Host) -> None:
        if a.ns in self._faulted:
            self._nft(a, f"delete table inet {FAULT_TABLE}\n")
            self._faulted.discard(a.ns)

    # -- teardown ----------------------------------------------------------
    def pids(self) -> list[int]:
        """Processes still inside this network's namespaces."""
        found: list[int] = []
        for ns in self._namespaces:
            out = _run("ip", "netns", "pids", ns, check=False).stdout
            found += [int(p) for p in out.split() if p.isdigit()]
        return found

    def close(self) -> None:
        """Stop what still runs inside (SIGTERM, then SIGKILL) and delete every namespace."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)  # a bounded wait for processes to exit, not synchronisation
        self._signal_all(signal.SIGKILL)
        for ns in reversed(self._namespaces):
            _run("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
        self.hosts.clear()
        self._faulted.clear()

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
