"""A process's HTTP listener: a route table served from its own threads.

Theory of operation: ``HttpEndpoint`` wraps the standard library's
``ThreadingHTTPServer`` in a daemon thread, so that a slow client or a long
scrape never holds up the process's reactor; each request gets a thread of its
own. Routes map a path to a function of the query string that returns a
``Response``; an unknown path is a 404, a route that raises is a 500 with one
line of text. The listener binds at ``start`` and a port in use is a one-line
``ZdfError``; ``close`` stops serving and joins the thread with a deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from zdf.errors import ZdfError

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
"""How often the serving thread looks for a shutdown request (bounds ``close``)."""
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, "text/plain; charset=utf-8", text.encode())


Query = dict[str, list[str]]
Route = Callable[[Query], Response]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = self.server.routes.get(url.path)
        if route is None:
            response = Response.text(404, f"no such page: {url.path}\n")
        else:
            try:
                response = route(parse_qs(url.query))
            except Exception as exc:
                log.debug("http %s failed", url.path, exc_info=True)
                response = Response.text(500, f"{type(exc).__name__}: {exc}\n")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]


class HttpEndpoint:
    def __init__(self, addr: str, routes: dict[str, Route], name: str = "zdf") -> None:
        self.addr = addr
        self.name = name
        self.routes = routes  # the caller's table: routes it adds later are served too
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpEndpoint:
        host, _, port = self.addr.rpartition(":")
        try:
            server = _Server((host.strip("[]"), int(port)), _Handler)
        except OSError as exc:
            raise ZdfError(f"cannot serve http at {self.addr}: {exc.strerror or exc}") from None
        server.routes = self.routes
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"{self.name}-http",
            daemon=True,
        )
        self._thread.start()
        log.info("http at http://%s/ (metrics at /metrics)", self.addr)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT)
