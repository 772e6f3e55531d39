"""What the function queue keeps per task and per worker, and the errors it answers with.

``FnTask`` is both a task on its way (queued, waiting for inputs, on a worker)
and, once done, the record of its result that task graphs use
(``zdf.master.fndeps``). ``FnWorker`` is the master's view of one worker
process: what it has in flight, its estimated load, where its object store is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zdf.errors import ProtocolError
from zdf.master import fnplacement as place
from zdf.wire.rpc import Call

PICKLE_REFUSED = {
    "type": "PermissionError",
    "module": "builtins",
    "message": "this cluster does not accept pickled functions (the master's allow-pickle is "
    "false); name the function by import path, or see the README on allow-pickle",
    "traceback": "",
}


@dataclass(slots=True, eq=False)  # compared by identity
class FnTask:
    key: int
    client: bytes
    tid: int
    fn: str
    retries: int
    frames: list[Any]
    reply: str = ""  # the client's result address ("": results come back through the master)
    worker: bytes | None = None
    priority: int = 0
    demand: place.Resources | None = None  # None: one cpu
    name: str = ""  # what durations are learnt under ("": the function path)
    estimate: float | None = None  # what placement counted for it on its worker
    sent: int = 0  # when it was sent to its worker (a worker runs its tasks in this order)
    # task graphs (zdf.master.fndeps): the task as an input of others, and its own inputs
    inputs: list[FnTask] | None = None  # records of its inputs, in order
    missing: int = 0  # inputs not ready yet
    state: str = ""  # fndeps: pending, ready, failed or lost ("": no graph concerns it)
    holders: list[bytes] = field(default_factory=list)  # workers that keep its value
    nbytes: int = 0  # its value's size, as packed
    error: list[Any] | None = None  # its error's frames, if it failed
    waiters: list[FnTask] | None = None  # tasks waiting for it
    refs: int = 0  # pending tasks that take it as an input
    released: bool = False  # its client no longer holds the future
    skey: Any = None  # its store key on the holders (None: ``key``)

    @property
    def kind(self) -> str:
        return self.name or self.fn


@dataclass
class FnWorker:
    peer: bytes
    executor_id: str
    name: str
    direct: str = ""  # where it takes tasks under a lease ("": it does not)
    inflight: set[int] = field(default_factory=set)  # tasks it runs (or will, in order)
    # Tasks sent ahead of their inputs (zdf.master.fndeps): they wait there, counted
    # neither as load nor in ``inflight`` until the master knows their inputs are made.
    pipelined: set[int] = field(default_factory=set)
    demands: dict[int, place.Resources] = field(default_factory=dict)  # non-default only
    load: float = 0.0  # estimated seconds of the known tasks in flight
    unknown: int = 0  # tasks in flight whose duration is not known yet
    since: float = 0.0  # when it last reported progress or got work while idle
    stealing: bool = False  # a steal request is on its way to it
    done: int = 0
    store: str = ""  # its object store's port (zdf.executor.objtransfer)
    over_limit: bool = False  # its store is over its memory limit: placed on last
    stored: int = 0  # bytes scattered to it (spreads scatters)


@dataclass
class PendingCancel:
    call: Call
    peers: set[bytes]  # workers asked to withdraw a task, not answered yet
    canceled: list[int]


def task_options(options: dict[str, Any]) -> tuple[int, place.Resources | None, str]:
    """A task's ``priority``, ``resources`` and ``name`` (``client.options``)."""
    priority = options.get("priority", 0)
    name = options.get("name", "")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ProtocolError("option 'priority' is not an integer")
    if not isinstance(name, str):
        raise ProtocolError("option 'name' is not a string")
    return priority, place.parse_demand(options.get("resources")), name


def limit_error(message: str) -> dict[str, str]:
    return {"type": "LimitExceeded", "module": "zdf.errors", "message": message, "traceback": ""}


def infeasible_error(why: str) -> dict[str, str]:
    return {
        "type": "InfeasibleTask",
        "module": "zdf.errors",
        "message": f"no executor can run this task: {why}",
        "traceback": "",
    }
