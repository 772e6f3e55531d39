"""What a task costs its worker process in file descriptors, from its spec.

A task declares how many ZeroMQ sockets it opens in ``params["sockets"]`` (the
job builders set it: a binlog task opens one data pipe per table); a task that
does not say is counted ``DEFAULT_TASK_SOCKETS``. Each socket is counted
``FDS_PER_SOCKET`` descriptors (its mailbox, a listener or connections). The
master refuses a job with a task larger than any worker's budget; the executor
places tasks by it (``zdf.executor.limits``).
"""

from __future__ import annotations

from typing import Any

DEFAULT_TASK_SOCKETS = 8
FDS_PER_SOCKET = 3
"""A socket's mailbox, and a listener or a connection or two: a round upper bound."""


def task_sockets(task: dict[str, Any]) -> int:
    params = task.get("params") or {}
    value = params.get("sockets") if isinstance(params, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return DEFAULT_TASK_SOCKETS


def task_cost(task: dict[str, Any]) -> int:
    """Descriptors a task (a ``TaskSpec`` dict) is counted for."""
    return FDS_PER_SOCKET * task_sockets(task)
