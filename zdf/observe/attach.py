"""Give a process its HTTP endpoints: one function per role, called by its command.

Each returns ``None`` when the process's ``http-addr`` is empty, else a started
``Observer`` (the master's with the dashboard routes too); a port that cannot
be bound is a one-line ``ZdfError``.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from zdf.observe import executor_view, master_view, metastore_view
from zdf.observe.endpoints import Observer, RoleView
from zdf.wire import security
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import endpoint

if TYPE_CHECKING:
    from zdf.executor.server import Executor
    from zdf.master.server import Master
    from zdf.metastore.server import MetaServer


def _observer(
    addr: str, reactor: Reactor, role: str, name: str, view: ModuleType, process: Any
) -> Observer:
    """``view`` is the role's module: ``snapshot(process)``, ``healthy``, ``metrics``."""
    # Read-only pages without a login: in protected mode (no security dir, not
    # insecure) they are served on loopback only, as every other port.
    security.check_bind(endpoint(addr))
    role_view = RoleView(role, name, lambda: view.snapshot(process), view.healthy, view.metrics)
    return Observer(addr, reactor, role_view)


def observe_master(master: Master) -> Observer | None:
    from zdf.observe.dashboard import Dashboard

    config = master.config
    if not config.http_addr:
        return None
    observer = _observer(
        config.http_addr, master.reactor, "master", config.name, master_view, master
    )
    dashboard = Dashboard(observer, list(config.meta_endpoints))
    observer.add_routes(dashboard.routes())
    observer.on_close(dashboard.close)
    return observer.start()


def observe_executor(executor: Executor) -> Observer | None:
    addr = executor.config.http_addr
    if not addr:
        return None
    name = executor.executor_id
    return _observer(addr, executor.reactor, "executor", name, executor_view, executor).start()


def observe_metastore(server: MetaServer) -> Observer | None:
    addr = server.config.http_addr
    if not addr:
        return None
    name = server.config.name
    return _observer(addr, server.reactor, "metastore", name, metastore_view, server).start()
