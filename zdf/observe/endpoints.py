"""A process's ``/metrics`` and ``/health``, and the wiring of its HTTP listener.

``serve_http`` is what each process calls when its ``http-addr`` is set: it
makes a ``LoopBridge`` to the process's reactor, a Prometheus registry whose one
collector takes a snapshot through the bridge at scrape time, and an
``HttpEndpoint`` with the routes. ``/health`` answers 200 with the role's JSON
summary when the loop answers and the role says it serves (a master always, an
executor once registered, a metastore replica that knows its leader), else 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from zdf.errors import ZdfError
from zdf.observe.bridge import LoopBridge
from zdf.observe.server import HttpEndpoint, Query, Response, Route
from zdf.wire.reactor import Reactor

log = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT = 2.0
"""How long a scrape waits for the process's loop; a loop stalled longer is unhealthy."""


@dataclass(frozen=True)
class RoleView:
    role: str  # "master", "executor" or "metastore"
    name: str
    snapshot: Callable[[], dict[str, Any]]  # runs on the reactor's thread
    healthy: Callable[[dict[str, Any]], bool]
    metrics: Callable[[dict[str, Any]], Iterator[Metric]]


class _SnapshotCollector(Collector):
    def __init__(self, view: RoleView, bridge: LoopBridge) -> None:
        self.view = view
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        snap = self.bridge.call(self.view.snapshot, SNAPSHOT_TIMEOUT)
        info = GaugeMetricFamily(
            "zdf_process_info", "This process's role and name", labels=["role", "name"]
        )
        info.add_metric([self.view.role, self.view.name], 1)
        yield info
        yield from self.view.metrics(snap)


class Observer:
    """The HTTP side of one process: its bridge, registry and listener."""

    def __init__(self, addr: str, reactor: Reactor, view: RoleView) -> None:
        self.view = view
        self.bridge = LoopBridge(reactor)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(view, self.bridge))
        ProcessCollector(namespace="zdf", registry=self.registry)
        self.routes: dict[str, Route] = {"/metrics": self._metrics, "/health": self._health}
        self.endpoint = HttpEndpoint(addr, self.routes, name=view.role)
        self._on_close: list[Callable[[], None]] = []

    def snapshot(self) -> dict[str, Any]:
        """The role's snapshot, taken on its loop (``Timeout`` if the loop does not answer)."""
        return dict(self.bridge.call(self.view.snapshot, SNAPSHOT_TIMEOUT))

    def add_routes(self, routes: Mapping[str, Route]) -> None:
        self.routes.update(routes)

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def start(self) -> Observer:
        try:
            self.endpoint.start()
        except ZdfError:
            self.bridge.close()
            raise
        return self

    def close(self) -> None:
        self.endpoint.close()
        self.bridge.close()
        for callback in self._on_close:
            callback()

    def _metrics(self, query: Query) -> Response:
        try:
            body = generate_latest(self.registry)
        except ZdfError as exc:
            return Response.text(503, f"{exc}\n")
        return Response(200, CONTENT_TYPE_LATEST, body)

    def _health(self, query: Query) -> Response:
        doc: dict[str, Any] = {"role": self.view.role, "name": self.view.name}
        try:
            snap = self.snapshot()
        except ZdfError as exc:
            doc.update(status="unresponsive", error=str(exc))
            return _json(503, doc)
        ok = self.view.healthy(snap)
        doc["status"] = "serving" if ok else "not serving"
        for key in ("leading", "epoch", "registered", "master", "role", "leader", "term"):
            if key in snap and key != "role":
                doc[key] = snap[key]
        if "role" in snap and self.view.role == "metastore":
            doc["raft_role"] = snap["role"]
        return _json(200 if ok else 503, doc)


def _json(status: int, doc: Any) -> Response:
    return Response(status, "application/json", json.dumps(doc, default=str).encode())
