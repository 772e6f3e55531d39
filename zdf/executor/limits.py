"""How many sockets a worker process may open, and what a task will take of them.

A worker process hosts many tasks (a 1,000-table benchmark job puts hundreds of
producers in one process, and a binlog task opens one data pipe per table).
Every ZeroMQ socket costs file descriptors (its mailbox, its listener, one per
connection) and counts against libzmq's ``MAX_SOCKETS`` (1,023 by default). A
limit hit in the middle of a job fails a task in the middle of its work, so:

* at start a worker raises its soft descriptor limit to the hard one and sets its
  context's ``MAX_SOCKETS`` from it (``raise_limits``), before any socket exists;
* its *budget* is that many descriptors, less a reserve for the process's own
  sockets and files, or less if the executor's ``worker-sockets`` says so;
* a task costs what its spec declares (``zdf.jobs.cost``); the executor places a
  task only on a worker with room for it, and the master refuses at once a job
  with a task larger than any worker's budget, before any of its tasks starts;
* a worker checks its real descriptor count before it starts a task
  (``RoomCheck``), a backstop for estimates that were wrong.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import psutil
import zmq

from zdf.errors import JobError

RESERVE_FDS = 128
"""Kept for the worker's own sockets (control, function tasks) and its files."""
MAX_FDS = 1 << 16


def raise_limits(budget: int = 0) -> int:
    """Raise this process's descriptor limit as far as allowed and size the ZeroMQ
    context to it; returns the budget (descriptors tasks may use). Call before the
    first socket is made: libzmq reads ``MAX_SOCKETS`` once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else MAX_FDS, MAX_FDS)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    zmq.Context.instance().set(zmq.MAX_SOCKETS, max(1024, soft))
    available = max(0, soft - RESERVE_FDS)
    return min(budget, available) if budget > 0 else available


def count_fds() -> int:
    """Descriptors this process has open (a listing of ``/proc/self/fd``: it costs
    what is open, a millisecond at a few thousand). Listed directly where there is
    one: ``psutil.Process()`` reads the process's stat file first, each time."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return int(psutil.Process().num_fds())


class RoomCheck:
    """The backstop: ``JobError`` unless this process has ``cost`` descriptors to
    spare in ``budget`` (plus the reserve).

    Counting the open descriptors costs what is open, so counting before every one
    of a thousand tasks cost a worker seconds. A count is taken again only when the
    costs declared since the last one reach a quarter of that count (at least
    ``MIN_RECOUNT``), or when the last count and the costs since would leave no room:
    counting costs O(1) per declared descriptor, and near the limit every start is
    checked against a real count."""

    MIN_RECOUNT = 64

    def __init__(self, budget: int, count: Callable[[], int] = count_fds) -> None:
        self.limit = budget + RESERVE_FDS
        self._count = count
        self.counted = -1  # no count yet
        self.since = 0  # costs declared since the last count
        self.counts = 0

    def check(self, task_id: str, cost: int) -> None:
        estimate = self.counted + self.since + cost
        if (
            self.counted < 0
            or self.since >= max(self.MIN_RECOUNT, self.counted // 4)
            or estimate > self.limit
        ):
            self.counted, self.since = self._count(), 0
            self.counts += 1
        in_use = self.counted + self.since
        if in_use + cost > self.limit:
            raise JobError(
                f"task {task_id} refused: it needs about {cost} file descriptors and this "
                f"worker process has {max(0, self.limit - in_use)} to spare "
                f"({in_use} in use, limit {self.limit})"
            )
        self.since += cost
