"""Give a process its HTTP endpoints: one function per role, called by its command.

Each returns ``None`` when the process's ``http-addr`` is empty, else a started
``Observer`` (the master's with the dashboard routes too); a port that cannot
be bound is a one-line ``ZdfError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zdf.observe import executor_view, master_view, metastore_view
from zdf.observe.endpoints import Observer, RoleView

if TYPE_CHECKING:
    from zdf.executor.server import Executor
    from zdf.master.server import Master
    from zdf.metastore.server import MetaServer


def observe_master(master: Master) -> Observer | None:
    from zdf.observe.dashboard import Dashboard

    addr = master.config.http_addr
    if not addr:
        return None
    view = RoleView(
        "master",
        master.config.name,
        lambda: master_view.snapshot(master),
        master_view.healthy,
        master_view.metrics,
    )
    observer = Observer(addr, master.reactor, view)
    dashboard = Dashboard(observer, list(master.config.meta_endpoints))
    observer.add_routes(dashboard.routes())
    observer.on_close(dashboard.close)
    return observer.start()


def observe_executor(executor: Executor) -> Observer | None:
    addr = executor.config.http_addr
    if not addr:
        return None
    view = RoleView(
        "executor",
        executor.executor_id,
        lambda: executor_view.snapshot(executor),
        executor_view.healthy,
        executor_view.metrics,
    )
    return Observer(addr, executor.reactor, view).start()


def observe_metastore(server: MetaServer) -> Observer | None:
    addr = server.config.http_addr
    if not addr:
        return None
    view = RoleView(
        "metastore",
        server.config.name,
        lambda: metastore_view.snapshot(server),
        metastore_view.healthy,
        metastore_view.metrics,
    )
    return Observer(addr, server.reactor, view).start()
