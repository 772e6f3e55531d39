"""Run a metastore server as a child process (tests, benchmarks, local clusters).

The server runs in a fresh interpreter (``python -m zdf.metastore``, the same
command as ``zdf metastore``), never in a fork of the caller, because LevelDB
is not fork-safe. ``start`` returns once the server answers ``status``;
``stop``/``kill`` act on the pid and always reap the child; ``pause`` and
``resume`` send SIGSTOP and SIGCONT. ``MetastoreCluster`` runs 1, 3 or 5 of them
on loopback; ``route`` lets a test put a proxy on each directed peer link.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from zdf.errors import ZdfError
from zdf.metastore.client import MetaClient
from zdf.wire.sockets import free_port

HOST = "127.0.0.1"


class MetastoreProcess:
    def __init__(
        self,
        data_dir: str,
        addr: str | None = None,
        *,
        name: str = "meta-1",
        log_path: str | None = None,
        extra_args: Sequence[str] = (),
        peer_addr: str | None = None,
        initial_cluster: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.addr = addr or f"{HOST}:{free_port()}"
        self.peer_addr = peer_addr or f"{HOST}:{free_port()}"
        self.initial_cluster = initial_cluster or {name: self.peer_addr}
        self.name = name
        self.log_path = log_path or os.path.join(data_dir + ".log")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "zdf.metastore",
            "--name",
            self.name,
            "--addr",
            self.addr,
            "--peer-addr",
            self.peer_addr,
            "--initial-cluster",
            ",".join(f"{n}={a}" for n, a in self.initial_cluster.items()),
            "--data-dir",
            self.data_dir,
            *self.extra_args,
        ]

    def start(self, timeout: float = 15.0) -> MetastoreProcess:
        """Start the server and wait until it answers (``ZdfError`` if it does not)."""
        self.start_process()
        self.wait_ready(timeout)
        return self

    def start_process(self) -> None:
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with MetaClient(self.addr, timeout=0.5) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ZdfError(
                        f"metastore exited with {self.proc.returncode}: {self.log_tail()}"
                    )
                try:
                    client.status()
                    return
                except ZdfError:
                    if time.monotonic() > deadline:
                        raise ZdfError(f"metastore at {self.addr} did not start in time") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def status(self, timeout: float = 0.5) -> dict[str, Any] | None:
        """This replica's own view (role, term, leader...), or None if it does not answer."""
        if not self.running:
            return None
        try:
            with MetaClient(self.addr, timeout=timeout, attempt_timeout=timeout) as client:
                return client.status()
        except ZdfError:
            return None

    def __enter__(self) -> MetastoreProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Route = Callable[[str, str, str], str]
"""(from name, to name, to's peer-addr) -> the address ``from`` dials for ``to``."""


class MetastoreCluster:
    """1, 3 or 5 replicas on loopback, each with its own data-dir and log file."""

    def __init__(
        self,
        base_dir: str,
        size: int = 3,
        *,
        route: Route | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        names = [f"meta-{i + 1}" for i in range(size)]
        ports = _distinct_free_ports(2 * size)  # one port drawn twice: a replica cannot bind
        peer_addrs = {n: f"{HOST}:{ports[i]}" for i, n in enumerate(names)}
        client_addrs = {n: f"{HOST}:{ports[size + i]}" for i, n in enumerate(names)}
        self.members: list[MetastoreProcess] = []
        for name in names:
            cluster = {
                other: addr if other == name or route is None else route(name, other, addr)
                for other, addr in peer_addrs.items()
            }
            self.members.append(
                MetastoreProcess(
                    os.path.join(base_dir, name),
                    client_addrs[name],
                    name=name,
                    log_path=os.path.join(base_dir, f"{name}.log"),
                    peer_addr=peer_addrs[name],
                    initial_cluster=cluster,
                    extra_args=extra_args,
                )
            )
        self.peer_addrs = peer_addrs

    @property
    def endpoints(self) -> list[str]:
        return [m.addr for m in self.members]

    def by_name(self, name: str) -> MetastoreProcess:
        return next(m for m in self.members if m.name == name)

    def start(self, timeout: float = 20.0) -> MetastoreCluster:
        for member in self.members:
            member.start_process()
        for member in self.members:
            member.wait_ready(timeout)
        return self

    def leader(
        self, timeout: float = 10.0, among: Sequence[MetastoreProcess] = ()
    ) -> MetastoreProcess:
        """The replica that a majority follows, waiting up to ``timeout`` for one."""
        deadline = time.monotonic() + timeout
        candidates = list(among) or self.members
        while True:
            for member in candidates:
                status = member.status()
                if status is not None and status.get("role") == "leader":
                    return member
            if time.monotonic() > deadline:
                raise ZdfError("no metastore leader elected in time")
            time.sleep(0.02)

    def kill_all(self) -> None:
        for member in self.members:
            member.resume()
            member.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {m.name}\n{m.log_tail(40)}" for m in self.members)

    def __enter__(self) -> MetastoreCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
