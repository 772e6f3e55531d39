"""The interface between a task and whatever hosts it (a worker process, the local runner).

An operator sees the world only through its ``TaskContext``: the reactor it must
never block, where to bind its data sockets, a directory of the job's endpoints
(so that a task restarted elsewhere is found again), and three ways to report.
Keeping this surface small is what lets the same operator run in the executor's
worker processes, in the in-process test runner and in the multi-process bench
runner without change.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from zdf.wire import Reactor


class TaskContext(abc.ABC):
    """What the host of a task provides to its operator.

    Attributes are plain (set by the implementation's constructor):
    ``job_id``, ``task_id``, ``attempt`` (0 on the first run, +1 per restart),
    ``params`` (the task spec's params), ``reactor`` (the host's event loop),
    ``host`` (the host to bind tcp:// data sockets on) and ``ipc_dir`` (a
    directory for ipc:// endpoints when every peer shares this host, else None);
    optionally ``same_host_dir``: where peers may share this host and may not, a
    private directory for the ipc:// twins of tcp:// data sockets, dialed by the
    peers on this host (``zdf.runtime.hubaddr``).
    """

    job_id: str
    task_id: str
    attempt: int
    params: dict[str, Any]
    reactor: Reactor
    host: str
    ipc_dir: str | None
    same_host_dir: str | None = None

    @abc.abstractmethod
    def publish_endpoint(self, name: str, addr: str) -> None:
        """This task listens at ``addr`` (a full zmq URL) for ``name``."""

    @abc.abstractmethod
    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(addr)`` once ``task_id`` of this job has published ``name``.

        Called again whenever the address changes (the task restarted elsewhere).
        Hosts may call it from inside this method when the address is already
        known, or on a later reactor turn; operators must tolerate both.
        """

    @abc.abstractmethod
    def report_progress(self, counters: dict[str, float]) -> None:
        """Cheap; the host rate-limits what it forwards (e.g. ``{"records": n}``)."""

    @abc.abstractmethod
    def report_finished(self, summary: dict[str, Any]) -> None:
        """The task is done; ``summary`` is a small msgpack-able map."""

    @abc.abstractmethod
    def report_failed(self, error: str) -> None:
        """The task cannot go on; ``error`` is one line (plus a traceback if useful)."""

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last state saved by ``save_checkpoint`` for this task (failover), or None."""
        return None

    def save_checkpoint(
        self, state: dict[str, Any], on_saved: Callable[[], None] | None = None
    ) -> None:
        """Persist ``state`` for a restart; ``on_saved`` runs once it is durable."""
        if on_saved is not None:
            on_saved()
