"""The master's live dashboard at ``/``: Jinja2 templates, refreshed by htmx.

Theory of operation: ``/`` renders the page once (``dashboard.html``) with the
panel inside it, so it reads well even before any script runs. The page loads
htmx (vendored under ``static/``) and the panel's element asks for
``/dash/panel`` every second (``hx-trigger="every 1s"``) and swaps the answer in:
no hand-written script, no polling loop of our own. Each panel is rendered from a
snapshot of the master taken on its loop; rates (records/s of each job,
function tasks/s) come from ``RateBoard`` samples over the last few seconds,
and the metastore's leader and term from a status call made on the HTTP thread
and kept for a second (the master's loop never waits on the metastore for a page).
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from zdf.errors import ZdfError
from zdf.metastore.client import MetaClient
from zdf.observe.endpoints import Observer
from zdf.observe.rates import RateBoard, records_done
from zdf.observe.server import Query, Response, Route
from zdf.observe.timefmt import clock, duration

META_STATUS_TTL = 1.0
META_STATUS_TIMEOUT = 1.0
REFRESH = "1s"
MAX_TASK_ROWS = 200
"""Task rows the panel shows (those of unfinished jobs first); the rest are counted."""


class MetaStatus:
    """The metastore's status, asked from the HTTP thread and kept ``META_STATUS_TTL`` seconds."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self._lock = threading.Lock()
        self._client: MetaClient | None = None
        self._value: dict[str, Any] = {}
        self._at = float("-inf")

    def get(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at < META_STATUS_TTL:
                return self._value
            if self._client is None:
                self._client = MetaClient(self.endpoints, timeout=META_STATUS_TIMEOUT)
            try:
                status = self._client.status()
                self._value = {
                    "leader": status.get("leader"),
                    "leader_addr": status.get("leader_addr"),
                    "term": status.get("term"),
                    "commit_index": status.get("commit_index"),
                    "members": len(status.get("members") or []),
                }
            except ZdfError as exc:
                self._value = {"error": str(exc)}
            self._at = time.monotonic()
            return self._value

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


class Dashboard:
    def __init__(self, observer: Observer, meta_endpoints: list[str]) -> None:
        self.observer = observer
        self.meta = MetaStatus(meta_endpoints)
        self.rates = RateBoard()
        self.env = Environment(
            loader=PackageLoader("zdf.observe", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.env.filters.update(duration=duration, clock=clock, number=_number)
        self._htmx = resources.files("zdf.observe").joinpath("static/htmx.min.js").read_bytes()

    def routes(self) -> dict[str, Route]:
        return {
            "/": self.page,
            "/dash/panel": self.panel,
            "/static/htmx.min.js": self.script,
        }

    def close(self) -> None:
        self.meta.close()

    # -- routes ---------------------------------------------------------------
    def page(self, query: Query) -> Response:
        return self._html("dashboard.html", refresh=REFRESH)

    def panel(self, query: Query) -> Response:
        return self._html("panel.html")

    def script(self, query: Query) -> Response:
        return Response(200, "text/javascript", self._htmx, {"Cache-Control": "max-age=86400"})

    # -- rendering --------------------------------------------------------------
    def _html(self, template: str, **extra: Any) -> Response:
        try:
            view = self.view()
        except ZdfError as exc:
            view = {"error": str(exc)}
        body = self.env.get_template(template).render(**view, **extra)
        return Response(200, "text/html; charset=utf-8", body.encode())

    def view(self) -> dict[str, Any]:
        """What the templates show: the master's snapshot plus rates and the metastore."""
        snap = self.observer.snapshot()
        now, wall = time.monotonic(), time.time()
        jobs = snap["jobs"]
        fn = snap["functions"]
        counters = {f"job:{j['id']}": records_done(j["tasks"]) for j in jobs}
        counters["fn:completed"] = float(fn.get("completed", 0))
        counters["fn:submitted"] = float(fn.get("submitted", 0))
        rates = self.rates.update(now, counters)
        for job in jobs:
            counts: dict[str, int] = {}
            for task in job["tasks"]:
                counts[task["state"]] = counts.get(task["state"], 0) + 1
            job["counts"] = counts
            job["records"] = counters[f"job:{job['id']}"]
            job["rate"] = rates[f"job:{job['id']}"] if job["state"] == "running" else None
            start = job.get("started_at") or job["submitted_at"]
            job["duration"] = (job.get("finished_at") or wall) - start
        live = [j for j in jobs if j["state"] in ("pending", "running")]
        ordered = list(reversed(live)) + [j for j in reversed(jobs) if j not in live]
        tasks = [
            {**t, "job": j["id"], "records": (t.get("progress") or {}).get("records")}
            for j in ordered
            for t in j["tasks"]
        ]
        return {
            "master": snap,
            "meta": self.meta.get(),
            "executors": snap["executors"],
            "jobs": ordered,
            "tasks": tasks[:MAX_TASK_ROWS],
            "tasks_hidden": max(0, len(tasks) - MAX_TASK_ROWS),
            "task_states": snap["task_states"],
            "functions": fn,
            "fn_rate": rates["fn:completed"],
            "fn_submit_rate": rates["fn:submitted"],
            "now": wall,
        }
