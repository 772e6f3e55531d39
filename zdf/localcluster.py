"""A whole zdf cluster on this machine, as child processes on free loopback ports.

Used by ``zdf demo``, the integration tests and the benchmarks: one metastore,
one master and N executors, each a real process started with the same CLI a
user runs. With ``secure=True`` (the default) it first creates CURVE keys in
its folder (``zdf security init``): every child runs with ``--security-dir``, and
this process uses the client role's keys while the cluster runs. Every child
is tracked by its pid and stopped by it (SIGTERM, then SIGKILL after a grace
period); ``stop()`` is safe to call more than once and is
registered with ``atexit`` so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zdf import protocol as P
from zdf.errors import Timeout, ZdfError
from zdf.wire import security
from zdf.wire.rpc import RpcClient
from zdf.wire.sockets import free_port

STOP_GRACE = 5.0
HOST = "127.0.0.1"

Placement = Callable[[str], tuple[list[str], str]]
"""Where a child runs, by its name ("metastore-1", "master-1", "executor-2"): the command
prefix that starts it there (``["ip", "netns", "exec", NS]``) and the host others dial it
at. The default runs everything here, on loopback."""


def on_this_host(name: str) -> tuple[list[str], str]:
    return [], HOST


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.01
) -> Any:
    """Poll ``condition`` until it returns something truthy; ``Timeout`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    log_path: str
    addr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalCluster:
    """``LocalCluster()`` runs in a temporary folder of its own, removed at ``stop()``;
    ``with LocalCluster() as cluster:`` starts it and stops it. ``resources``: what
    every executor advertises to function tasks (``{"gpu": 1}``; cpu: its workers)."""

    def __init__(
        self,
        base_dir: str | None = None,
        executors: int = 2,
        workers: int = 2,
        slots: int = 32,
        keepalive_interval: str = "200ms",
        keepalive_ttl: str = "1s",
        log_level: str = "info",
        extra_env: dict[str, str] | None = None,
        masters: int = 1,
        metastores: int = 1,
        resources: dict[str, float] | None = None,
        secure: bool = True,
        http: bool = True,
        log_format: str = "text",
        place: Placement = on_this_host,
        bind_any: bool = False,
        discover: bool = False,
    ) -> None:
        """``bind_any``: every process binds 0.0.0.0 and advertises its host's address
        (only where ``place`` puts processes on hosts of their own); ``discover``:
        executors get no ``join`` and find the masters through the metastore."""
        self.place = place
        self.bind_any = bind_any
        self.discover = discover
        self._owned_dir = base_dir is None
        self.base_dir = os.path.abspath(base_dir or tempfile.mkdtemp(prefix="zdf-cluster-"))
        self.resources = resources
        self.security_dir = os.path.join(self.base_dir, "keys") if secure else ""
        self._outer_security: tuple[security.SecurityContext | None, bool] | None = None
        self._outer_env: str | None = None
        self.n_executors = executors
        self.workers = workers
        self.slots = slots
        self.keepalive_interval = keepalive_interval
        self.keepalive_ttl = keepalive_ttl
        self.log_level = log_level
        self.env = {**os.environ, **(extra_env or {})}
        if not secure:
            self.env["ZDF_SECURITY_DIR"] = ""  # not the keys of some cluster around us
        self.children: list[Child] = []
        self.n_metastores = metastores
        self.http = http  # every process serves /metrics and /health on a free port
        self.log_format = log_format
        meta_hosts = [self._host(self._metastore_name(i)) for i in range(metastores)]
        self.meta_addrs = [f"{host}:{free_port()}" for host in meta_hosts]
        self.meta_peers = [f"{host}:{free_port()}" for host in meta_hosts]
        self.meta_addr = ",".join(self.meta_addrs)  # what --meta-endpoints takes
        self.metastores: list[Child] = []
        self.n_masters = masters
        master_hosts = [self._host(f"master-{i + 1}") for i in range(masters)]
        self.master_addrs = [f"{host}:{free_port()}" for host in master_hosts]
        self.heartbeat_addrs = [f"{host}:{free_port()}" for host in master_hosts]
        self.master_addr = ",".join(self.master_addrs)  # what --master-addr takes
        self.executors: list[Child] = []
        self.masters: list[Child] = []
        self._client: RpcClient | None = None
        os.makedirs(self.base_dir, exist_ok=True)
        atexit.register(self.stop)

    # -- starting -----------------------------------------------------------
    def _host(self, name: str) -> str:
        return self.place(name)[1]

    def _listen(self, flag: str, twin: str, addr: str) -> list[str]:
        """Flags to listen at ``addr``: bound there, or on 0.0.0.0 and advertised there."""
        if not self.bind_any:
            return [flag, addr]
        return [flag, "0.0.0.0:" + addr.rpartition(":")[2], twin, addr]

    def _metastore_name(self, index: int) -> str:
        return "metastore" if self.n_metastores == 1 else f"metastore-{index + 1}"

    def _spawn(self, name: str, args: list[str], addr: str = "") -> Child:
        log_path = os.path.join(self.base_dir, f"{name}.log")
        self.use_keys()
        if self.security_dir:
            args = [*args, "--security-dir", self.security_dir]
        cmd = [*self.place(name)[0], sys.executable, "-m", "zdf.cli.main", *args]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        child = Child(name, cmd, proc, log_path, addr)
        self.children.append(child)
        return child

    def _http_flag(self) -> list[str]:
        """``--http-addr`` on a free loopback port (``/metrics``, ``/health``, the dashboard)."""
        return ["--http-addr", f"{HOST}:{free_port()}"] if self.http else []

    @staticmethod
    def _note_http(child: Child) -> None:
        if "--http-addr" in child.args:
            child.extra["http"] = child.args[child.args.index("--http-addr") + 1]

    def http_url(self, child: Child | None = None, path: str = "/") -> str:
        """The URL of ``path`` on ``child``'s HTTP listener (default: the first master's)."""
        child = child or self.masters[0]
        return f"http://{child.extra['http']}{path}"

    def start_metastore(self, index: int = 0) -> Child:
        """Replica ``index`` (of ``metastores``; one replica is named plain "metastore")."""
        name = self._metastore_name(index)
        initial = ",".join(f"meta-{i + 1}={peer}" for i, peer in enumerate(self.meta_peers))
        child = self._spawn(
            name,
            [
                "metastore",
                "--name",
                f"meta-{index + 1}",
                *self._listen("--addr", "--advertise-addr", self.meta_addrs[index]),
                *self._listen("--peer-addr", "--advertise-peer-addr", self.meta_peers[index]),
                *(["--initial-cluster", initial] if self.n_metastores > 1 else []),
                "--data-dir",
                os.path.join(self.base_dir, name),
                "--log-level",
                self.log_level,
                "--log-format",
                self.log_format,
                *self._http_flag(),
            ],
            self.meta_addrs[index],
        )
        self._note_http(child)
        self.metastores.append(child)
        return child

    def metastore_leader(self) -> Child | None:
        """The metastore replica that leads now, if one answers so."""
        from zdf.metastore.client import MetaClient

        try:
            with MetaClient(self.meta_addrs, timeout=2.0) as meta:
                leader = meta.status().get("leader_addr")
        except ZdfError:
            return None
        return next((c for c in self.metastores if c.addr == leader and c.alive()), None)

    def start_master(self, index: int = 0) -> Child:
        child = self._spawn(
            f"master-{index + 1}",
            [
                "master",
                "--name",
                f"master-{index + 1}",
                *self._listen("--master-addr", "--advertise-addr", self.master_addrs[index]),
                *self._listen(
                    "--heartbeat-addr", "--advertise-heartbeat-addr", self.heartbeat_addrs[index]
                ),
                "--meta-endpoints",
                self.meta_addr,
                "--keepalive-interval",
                self.keepalive_interval,
                "--keepalive-ttl",
                self.keepalive_ttl,
                "--data-dir",
                os.path.join(self.base_dir, f"master-{index + 1}"),
                "--log-level",
                self.log_level,
                "--log-format",
                self.log_format,
                *self._http_flag(),
            ],
            self.master_addrs[index],
        )
        self._note_http(child)
        child.extra["id"] = f"master-{index + 1}"
        self.masters.append(child)
        return child

    def start_executor(self, index: int | None = None) -> Child:
        index = len(self.executors) + 1 if index is None else index
        addr = f"{self._host(f'executor-{index}')}:{free_port()}"
        child = self._spawn(
            f"executor-{index}",
            [
                "executor",
                "--name",
                f"exec-{index}",
                "--join",
                "" if self.discover else self.master_addr,
                *self._listen("--worker-addr", "--advertise-addr", addr),
                "--meta-endpoints",
                self.meta_addr,
                "--slots",
                str(self.slots),
                "--workers",
                str(self.workers),
                "--keepalive-interval",
                self.keepalive_interval,
                "--keepalive-ttl",
                self.keepalive_ttl,
                "--data-dir",
                os.path.join(self.base_dir, f"executor-{index}"),
                "--log-level",
                self.log_level,
                *(["--resources", _resources_flag(self.resources)] if self.resources else []),
                "--log-format",
                self.log_format,
                *self._http_flag(),
            ],
            addr,
        )
        self._note_http(child)
        child.extra["id"] = f"exec-{index}"
        self.executors.append(child)
        return child

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start everything and wait until every executor is registered and alive."""
        for index in range(self.n_metastores):
            self.start_metastore(index)
        for index in range(self.n_masters):
            self.start_master(index)
        for _ in range(self.n_executors):
            self.start_executor()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        wanted = {c.extra["id"] for c in self.executors if c.alive()}

        def ready() -> bool:
            self._check_children()
            try:
                rows = self.client().call(P.EXECUTOR_LIST, timeout=1.0)
            except ZdfError:
                return False
            alive = {r["id"] for r in rows if r["state"] == "alive"}
            return wanted <= alive

        wait_until(ready, timeout, "the cluster to start")

    def _check_children(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None and child.name in ("metastore", "master-1"):
                raise ZdfError(
                    f"{child.name} exited with {child.proc.returncode}; see {child.log_path}"
                )

    def client(self) -> RpcClient:
        if self._client is None:
            self._client = RpcClient(self.master_addrs, timeout=5.0)
        return self._client

    # -- faults -------------------------------------------------------------
    def kill(self, child: Child, sig: int = signal.SIGKILL) -> None:
        if child.alive():
            os.kill(child.pid, sig)
        if sig == signal.SIGKILL:
            child.proc.wait(STOP_GRACE)

    def leader(self) -> Child | None:
        """The master process that currently leads, if any answers so."""
        for child in self.masters:
            if not child.alive():
                continue
            try:
                with RpcClient(child.addr, timeout=0.5) as client:
                    if client.call(P.PING, retry=False).get("leading"):
                        return child
            except ZdfError:
                continue
        return None

    def executor_state(self, executor_id: str) -> str | None:
        for row in self.client().call(P.EXECUTOR_LIST, timeout=2.0):
            if row["id"] == executor_id:
                return str(row["state"])
        return None

    def use_keys(self) -> None:
        """Create the cluster's keys (secured) and use the client's in this process
        and in the commands it runs (``ZDF_SECURITY_DIR``)."""
        if not self.security_dir or self._outer_security is not None:
            return
        security.init_dir(self.security_dir)
        self._outer_security = (security.current(), security.is_insecure())
        self._outer_env = os.environ.get("ZDF_SECURITY_DIR")
        security.install(security.load(self.security_dir, "client"))
        os.environ["ZDF_SECURITY_DIR"] = self.security_dir

    # -- stopping -----------------------------------------------------------
    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        # Executors first (they stop their workers), then the master (which writes
        # its last state to the metastore), then the metastore.
        executors = [c for c in self.children if c in self.executors]
        others = [c for c in reversed(self.children) if c not in self.executors]
        for group in [executors, *([c] for c in others)]:
            for child in group:
                if child.alive():
                    try:
                        os.kill(child.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        self.children.clear()
        self.executors.clear()
        if self._outer_security is not None:
            outer, insecure = self._outer_security
            security.install(outer, insecure=insecure)
            self._outer_security = None
            if self._outer_env is None:
                os.environ.pop("ZDF_SECURITY_DIR", None)
            else:
                os.environ["ZDF_SECURITY_DIR"] = self._outer_env
        if self._owned_dir and os.path.isdir(self.base_dir):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        """Every child's log, for a failing test's report."""
        parts = []
        for name in sorted(os.listdir(self.base_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.base_dir, name), errors="replace") as fh:
                    parts.append(f"===== {name}\n{fh.read()[-4000:]}")
        return "\n".join(parts)


def _resources_flag(resources: dict[str, float]) -> str:
    return ",".join(f"{name}={amount:g}" for name, amount in resources.items())
