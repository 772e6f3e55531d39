"""Operation names and message bodies of the control plane (master, executors, clients).

Bodies are msgpack maps; each handler checks the fields it reads on arrival with
``fields``, which raises ``ProtocolError`` (an error reply, never a
crash) when a field is missing or of the wrong type.

Who sends what (ROUTER = the master, DEALER = executors and clients)::

    executor -> master   register, task_state (event), publish_endpoint, checkpoint;
                         batch (those of one turn in one message)
    master -> executor   start_tasks (a round's starts), start_task, cancel_task, endpoints
    client -> master     submit_job, job_list, job_status, job_cancel, executor_list,
                         cluster_status, wait_job; fn_client, fn_submit, fn_cancel (functions)
    worker -> master     fn_hello, fn_done, fn_stolen;  master -> worker: fn_run, fn_steal
    worker -> client     fn_result on the client's PULL (master -> client when it has no PULL);
                         fn_submit's "reply" is "endpoint#token", the token goes back in fn_result
    graphs               client -> master fn_release, fn_scatter; master -> worker fn_drop;
                         client -> worker fn_put; worker -> master fn_stored;
                         worker -> worker obj_get (zdf.executor.objtransfer)
    PUB/SUB              b"hb" + {"id", "seq", "epoch"} heartbeats, both directions
"""

from __future__ import annotations

from typing import Any, TypeVar

from zdf.errors import ProtocolError
from zdf.wire.batchcall import BATCH as BATCH  # worker -> executor -> master: a turn's calls

HEARTBEAT_TOPIC = b"hb"

# executor <-> master
REGISTER = "register"
TASK_STATE = "task_state"
PUBLISH_ENDPOINT = "publish_endpoint"
START_TASK = "start_task"
CANCEL_TASK = "cancel_task"
ENDPOINTS = "endpoints"
PROGRESS = "progress"
CHECKPOINT = "checkpoint"  # worker -> executor -> master: a task's state, fenced by attempt
START_TASKS = "start_tasks"  # master -> executor -> worker: a placement round's starts, as one

# client -> master
SUBMIT_JOB = "submit_job"
SUBMIT_PART = "submit_part"  # a part of a large job's tasks, before its submit_job (staging)
JOB_LIST = "job_list"
JOB_STATUS = "job_status"
JOB_CANCEL = "job_cancel"
WAIT_JOB = "wait_job"
EXECUTOR_LIST = "executor_list"
CLUSTER_STATUS = "cluster_status"
PING = "ping"

# short function tasks (zdf.master.fnqueue)
FN_HELLO = "fn_hello"  # worker -> master: I take function tasks
FN_CLIENT = "fn_client"  # client -> master: hello; the answer says if pickles are accepted
FN_SUBMIT = "fn_submit"  # client -> master: a batch of tasks
FN_RUN = "fn_run"  # master -> worker: a batch to run
FN_DONE = "fn_done"  # worker -> master: a batch of results
FN_RESULT = "fn_result"  # worker (or master) -> client: results of its tasks
FN_CANCEL = "fn_cancel"  # client -> master
FN_LEASE = "fn_lease"  # master -> client and worker: a lease on that worker for lone tasks
FN_REVOKE = "fn_revoke"  # master -> client and worker: the lease is over (its worker died)
FN_DIRECT = "fn_direct"  # client -> worker: a lone task under a lease, past the master
FN_REFUSED = "fn_refused"  # worker -> client: tasks under a lease it does not hold
FN_OUTPUT = "fn_output"  # worker -> client: what its task printed (zdf.observe.fnout)
FN_STEAL = "fn_steal"  # master -> worker: give back these tasks if not started yet
FN_STOLEN = "fn_stolen"  # worker -> master: the tasks it gave back (for a steal or a cancel)
FN_RELEASE = "fn_release"  # client -> master: futures it no longer holds (zdf.master.fndeps)
FN_DROP = "fn_drop"  # master -> worker: results no one refers to any more
FN_SCATTER = "fn_scatter"  # client -> master: where to put values it scatters (a request)
FN_PUT = "fn_put"  # client -> worker (its direct port): scattered values to keep (a request)
FN_STORED = "fn_stored"  # worker -> master: scattered values it now keeps
FN_ALIVE = "fn_alive"  # client -> master: it is still there (zdf.master.fnsessions)
FN_BYE = "fn_bye"  # client -> master: it closes; its results go (a request)
FN_READY = "fn_ready"  # master -> worker: inputs of tasks waiting there are made, held there
FN_FORGET = "fn_forget"  # master -> worker: drop these tasks sent ahead (an input failed)
OBJ_GET = "obj_get"  # worker -> worker (its store port): a result, for a task's input
PICKLED_FN = "!cloudpickle"  # fn_submit/fn_run: the task's first frame is the function
WORKER_LOST = "worker_lost"  # executor -> master: a worker process died
LEADER = "leader"  # executor -> worker: the leading master's address (for function tasks)
JOB_DELETE = "job_delete"  # client -> master: forget an ended job (and its record)
DEREGISTER = "deregister"  # executor -> master: it is shutting down (state left)
TASK_LOGS = "task_logs"  # client -> master -> every executor: a job's task output files


T = TypeVar("T")

_PY_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    list: (list, tuple),
    dict: (dict,),
    bytes: (bytes,),
}


def fields(body: Any, **spec: type) -> dict[str, Any]:
    """Check that ``body`` is a map with each named field of the given type."""
    if not isinstance(body, dict):
        raise ProtocolError("message body must be a map")
    for name, kind in spec.items():
        value = body.get(name)
        allowed = _PY_TYPES.get(kind, (kind,))
        if (
            value is None
            or not isinstance(value, allowed)
            or (kind is int and isinstance(value, bool))
        ):
            raise ProtocolError(f"field {name!r} missing or not {kind.__name__}")
    return body


SubmittedTask = tuple[int, str, int, list[Any], dict[str, Any]]


def submitted_tasks(entries: Any, frames: list[Any]) -> list[SubmittedTask]:
    """``[[tid, fn, retries, nframes(, options)], ...]`` (``fn_submit``, ``fn_direct``)
    with every task's frames, in order, as ``(tid, fn, retries, frames, options)``;
    ``options`` (``client.options``: priority, resources, name) is ``{}`` when absent."""
    if not isinstance(entries, list):
        raise ProtocolError("field 'tasks' is not a list")
    tasks = []
    offset = 0
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) in (4, 5)):
            raise ProtocolError("each task is [tid, fn, retries, nframes(, options)]")
        tid, fn, retries, nframes = entry[:4]
        options = entry[4] if len(entry) == 5 else {}
        if not (
            isinstance(tid, int)
            and isinstance(retries, int)
            and isinstance(nframes, int)
            and isinstance(fn, str)
        ):
            raise ProtocolError("bad task entry")
        if not isinstance(options, dict):
            raise ProtocolError("a task's options are not a map")
        if nframes < 1 or offset + nframes > len(frames):
            raise ProtocolError("task frames missing")
        tasks.append((tid, fn, max(0, retries), frames[offset : offset + nframes], options))
        offset += nframes
    return tasks
