"""Which role may call each operation of the master (CURVE roles, ``zdf.wire.security``).

The master's ``Channel`` checks this table before any handler runs: clients
submit and read, executors (and their workers) register, report and take
function tasks, and a master (a standby, a tool holding the master's keys) may
read. An operation missing from the table is refused to every role (a new
operation must say who may call it). A call without a role — no CURVE, so
protected mode on loopback — is not checked.
"""

from __future__ import annotations

import re
from typing import Any

from zdf import protocol as P
from zdf.config import parse_addr
from zdf.errors import ProtocolError

NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")

CLIENT = frozenset({"client"})
EXECUTOR = frozenset({"executor"})
READERS = frozenset({"client", "master"})
ANY = frozenset({"metastore", "master", "executor", "client"})

OPERATIONS: dict[str, frozenset[str]] = {
    P.PING: ANY,
    # executors and their workers
    P.REGISTER: EXECUTOR,
    P.TASK_STATE: EXECUTOR,
    P.BATCH: EXECUTOR,  # each call in it is checked again (zdf.wire.batchcall)
    P.PROGRESS: EXECUTOR,
    P.PUBLISH_ENDPOINT: EXECUTOR,
    P.CHECKPOINT: EXECUTOR,
    P.WORKER_LOST: EXECUTOR,
    P.DEREGISTER: EXECUTOR,
    P.FN_HELLO: EXECUTOR,
    P.FN_DONE: EXECUTOR,
    P.FN_STOLEN: EXECUTOR,
    P.FN_STORED: EXECUTOR,
    # clients
    P.SUBMIT_JOB: CLIENT,
    P.SUBMIT_PART: CLIENT,
    P.JOB_CANCEL: CLIENT,
    P.JOB_DELETE: CLIENT,
    P.FN_CLIENT: CLIENT,
    P.FN_SUBMIT: CLIENT,
    P.FN_CANCEL: CLIENT,
    P.FN_RELEASE: CLIENT,
    P.FN_SCATTER: CLIENT,
    P.FN_ALIVE: CLIENT,
    P.FN_BYE: CLIENT,
    P.JOB_LIST: READERS,
    P.JOB_STATUS: READERS,
    P.TASK_LOGS: READERS,
    P.WAIT_JOB: READERS,
    P.EXECUTOR_LIST: READERS,
    P.CLUSTER_STATUS: READERS,
}


MAX_SLOTS = 4096


def validate_registration(body: dict[str, Any]) -> None:
    """A ``register`` is refused whole before anything of it is kept (a half-registered
    executor would hold tasks no liveness pass can move)."""
    executor_id = body["executor_id"]
    if not NAME.fullmatch(executor_id):
        raise ProtocolError("field 'executor_id': 1-128 letters, digits, '.', '_', '-', ':', '/'")
    try:
        parse_addr(body["addr"])
    except ValueError as exc:
        raise ProtocolError(f"field 'addr': expected {exc}, got {body['addr'][:80]!r}") from None
    if not 0 <= body["slots"] <= MAX_SLOTS:
        raise ProtocolError(f"field 'slots': 0 to {MAX_SLOTS}")
