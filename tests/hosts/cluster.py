"""A ``LocalCluster`` whose every process runs on its own namespaced host.

Each metastore replica, master and executor gets a host of a ``Network`` (its own
network namespace and address, see ``netns``), by ``LocalCluster``'s placement hook;
the test process reaches them through an ``nsproxy`` process on a ``client`` host.
Stopping is ``LocalCluster.stop`` (by pid), then ``Network.close`` for anything left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

from zdf import errors
from zdf.errors import ZdfError
from zdf.localcluster import Child, LocalCluster

from .netns import Host, Network

PROXY = os.path.join(os.path.dirname(__file__), "nsproxy.py")
PROXY_TIMEOUT = 30.0


class ProxyClient:
    """``RpcClient.call`` and ``MetaClient.status`` made from inside a host."""

    def __init__(self, host: Host, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*host.prefix, sys.executable, PROXY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def request(self, **request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # the proxy's own calls have deadlines
        if not line:
            raise ZdfError(f"the namespace proxy exited with {self.proc.poll()}")
        reply = json.loads(line)
        if "error" in reply:
            cls = getattr(errors, str(reply.get("type")), ZdfError)
            raise (cls if isinstance(cls, type) and issubclass(cls, ZdfError) else ZdfError)(
                reply["error"]
            )
        return reply["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RpcOverProxy:
    """What ``LocalCluster.client()`` returns: an ``RpcClient`` look-alike."""

    def __init__(self, proxy: ProxyClient, endpoints: list[str]) -> None:
        self.proxy = proxy
        self.endpoints = endpoints

    def call(
        self, op: str, body: Any = None, *, timeout: float | None = None, retry: bool = True
    ) -> Any:
        return self.proxy.request(
            kind="rpc", endpoints=self.endpoints, op=op, body=body, timeout=timeout or 5.0,
            retry=retry,
        )  # fmt: skip

    def close(self) -> None:
        pass


class NetnsCluster(LocalCluster):
    """``one_host``: every process on that one host instead (tcp:// pipes, as on
    hosts, but no veth or bridge between them: to tell the two costs apart)."""

    def __init__(self, network: Network, base_dir: str, one_host: str = "", **options: Any) -> None:
        self.network = network
        self.one_host = one_host

        def place(name: str) -> tuple[list[str], str]:
            host = network.host(one_host or name)
            return host.prefix, host.ip

        super().__init__(base_dir, place=place, **options)
        # The proxy speaks as a client of this cluster: its keys (made as the cluster starts).
        self.proxy = ProxyClient(
            network.host("client"), {**self.env, "ZDF_SECURITY_DIR": self.security_dir}
        )

    def host_of(self, child: Child) -> Host:
        return self.network.hosts[self.one_host or child.name]

    def client(self) -> Any:
        if self._client is None:
            self._client = RpcOverProxy(self.proxy, self.master_addrs)  # type: ignore[assignment]
        return self._client

    def leader(self) -> Child | None:
        for child in self.masters:
            if not child.alive():
                continue
            try:
                ping = RpcOverProxy(self.proxy, [child.addr]).call("ping", timeout=0.5, retry=False)
            except ZdfError:
                continue
            if ping.get("leading"):
                return child
        return None

    def metastore_leader(self) -> Child | None:
        """The replica a majority of the replicas name as their leader (one cut off from
        the others names none, or an old one)."""
        named: Counter[str] = Counter()
        for child in self.metastores:
            try:
                status = self.proxy.request(kind="meta_status", endpoints=[child.addr], timeout=1.0)
            except ZdfError:
                continue
            if status.get("leader_addr"):
                named[str(status["leader_addr"])] += 1
        for leader, votes in named.most_common(1):
            if votes * 2 > len(self.metastores):
                return next((c for c in self.metastores if c.addr == leader and c.alive()), None)
        return None

    def meta_get(self, key: str) -> dict[str, Any] | None:
        """``{value, create_revision, mod_revision}`` of ``key``, or None."""
        found = self.proxy.request(kind="meta_get", endpoints=self.meta_addrs, key=key)
        return None if found is None else dict(found)

    def meta_history(self, prefix: str, since: int, quiet: float = 1.0) -> list[dict[str, Any]]:
        """Every event under ``prefix`` from revision ``since`` (until ``quiet`` s pass
        without one): ``{key, value, create_revision, mod_revision}``."""
        events = self.proxy.request(
            kind="meta_history",
            endpoints=self.meta_addrs,
            prefix=prefix,
            quiet=quiet,
            timeout=5.0,
            **{"from": since},
        )
        return list(events)

    def stop(self) -> None:
        super().stop()
        self.proxy.close()
