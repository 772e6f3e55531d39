"""What the master keeps in the metastore.

Keys (framework and discovery prefixes, DESIGN.md "Metastore")::

    /zdf/discovery/masters/<name>    {addr, heartbeat_addr, epoch}, under a lease
    /zdf/discovery/executors/<id>    {id, addr, slots, host}, under a lease per executor
    /zdf/framework/jobs/<job_id>     the job's header: state, times, settings, sizes
    /zdf/framework/specs/<job_id>/<n>          its task specs, SPEC_CHUNK a piece
    /zdf/framework/tasks/<job_id>/<task_id>    a task's state, placement and attempt
    /zdf/framework/checkpoints/<job_id>/<task_id>   a task's last checkpoint (msgpack)
    /zdf/framework/endpoints/<job_id>/<task_id>/<name>   where a task listens
    /zdf/election/master             the leading master, under its lease (election.py)

Records are JSON so that ``zdf meta get`` shows them readably. A job is stored
in pieces, so that no value grows with its number of tasks (a metastore value
is at most 1 MiB, and a write of megabytes stalls the master): its specs in
chunks, written once, then its header, last, as the commit mark of a submission
(specs without a header are a submission that never completed: ignored); and
one small record per task, written only once the task has left its first
state (no record: pending, attempt 0). The pieces of a job's spec are written
before its submission is acknowledged; later changes write only what changed
(``JobManager.dirty`` and ``dirty_tasks``), batched: the reactor flushes on a
short timer, so a burst of task reports costs one round of writes, not one per
report. The metastore being away never stops the master: a failed flush keeps
the jobs dirty and is tried again.

Fencing: once the master leads (``epoch`` set), every framework write -- job
records with their tasks (placements are written before a task is sent, so
this is what keeps a task from being dispatched twice), checkpoints,
endpoints, and the deletes when a job ends -- is a transaction whose compare
is ``create_revision(ELECTION_KEY) == epoch``. A master that was deposed
without noticing gets ``LostLeadership`` instead of overwriting what the new
leader decided, and steps down. Discovery records are not fenced: they live
under leases of their own and a new leader writes its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from zdf.errors import JobError, ZdfError
from zdf.master.election import ELECTION_KEY, LostLeadership
from zdf.master.jobs import JobManager, JobRecord, TaskRecord
from zdf.metastore.commands import MAX_TXN_OPS, MAX_VALUE_BYTES, TxnOp
from zdf.metastore.txn import Compare, delete_op, put_op

log = logging.getLogger(__name__)

DISCOVERY_MASTERS = "/zdf/discovery/masters/"
DISCOVERY_EXECUTORS = "/zdf/discovery/executors/"
FRAMEWORK_JOBS = "/zdf/framework/jobs/"
FRAMEWORK_SPECS = "/zdf/framework/specs/"
FRAMEWORK_TASKS = "/zdf/framework/tasks/"
SPEC_CHUNK = 256
"""Task specs a piece: a few tens of kB, well under the metastore's value limit."""
MAX_PIECE_BYTES = MAX_VALUE_BYTES // 2
MAX_TXN_BYTES = 2 * MAX_VALUE_BYTES  # as zdf.master.writebatch
FRAMEWORK_CHECKPOINTS = "/zdf/framework/checkpoints/"
FRAMEWORK_ENDPOINTS = "/zdf/framework/endpoints/"


class MetaLike(Protocol):
    def put(self, key: str | bytes, value: str | bytes, lease: int = 0) -> Any: ...
    def range(self, prefix: str | bytes, limit: int = 0) -> Any: ...
    def txn(self, compare: Any, success: Any = (), failure: Any = ()) -> Any: ...
    def delete(self, key: str | bytes, prefix: bool = False) -> Any: ...
    def lease_grant(self, ttl: float) -> int: ...
    def lease_keepalive(self, lease_id: int) -> Any: ...
    def lease_revoke(self, lease_id: int) -> Any: ...


def job_header(job: JobRecord, epoch: int = 0) -> dict[str, Any]:
    """The job without its tasks (``chunks``: its specs are in pieces). It names the
    epoch that wrote it, so the metastore's history shows which leader wrote what (a
    deposed one writes nothing: the fence)."""
    doc = job.to_dict(tasks=False)
    doc["written_epoch"] = epoch
    doc["spec"] = {"name": job.spec.name, "job_type": job.spec.job_type}
    doc["settings"] = job.spec.settings
    doc["task_count"] = len(job.tasks)
    doc["chunks"] = True
    return doc


def task_document(task: TaskRecord) -> dict[str, Any]:
    doc = task.to_dict()
    del doc["kind"]
    return doc


def spec_pieces(specs: list[dict[str, Any]]) -> list[bytes]:
    """Task specs (dicts) in pieces of ``SPEC_CHUNK`` (fewer where they are big), in
    order; ``JobError`` if one task's spec alone is over the metastore's limit."""
    pieces: list[bytes] = []
    for i in range(0, len(specs), SPEC_CHUNK):
        pieces.extend(_split(specs[i : i + SPEC_CHUNK]))
    return pieces


def spec_ops(job: JobRecord, pieces: list[bytes] | None = None) -> list[TxnOp]:
    """The job's spec pieces (made now, or ``pieces`` made as its parts came)."""
    if pieces is None:
        pieces = spec_pieces(job.spec.as_dict["tasks"])
    return [put_op(f"{FRAMEWORK_SPECS}{job.job_id}/{n:06d}", p) for n, p in enumerate(pieces)]


def _split(specs: list[Any]) -> list[bytes]:
    data = _dumps_list(specs)
    if len(data) <= MAX_PIECE_BYTES:
        return [data]
    if len(specs) == 1:
        raise JobError(
            f"task {specs[0].get('task_id')!r}: its spec is {len(data):,} bytes, "
            f"over the {MAX_PIECE_BYTES:,} a task may have"
        )
    half = len(specs) // 2
    return _split(specs[:half]) + _split(specs[half:])


def submission_ops(
    job: JobRecord, pieces: list[bytes] | None = None, epoch: int = 0
) -> list[TxnOp]:
    """What a submission writes: the spec pieces, then the header (the commit mark)."""
    return [*spec_ops(job, pieces), header_op(job, epoch)]


def header_op(job: JobRecord, epoch: int = 0) -> TxnOp:
    return put_op(FRAMEWORK_JOBS + job.job_id, _dumps(job_header(job, epoch)))


def task_ops(job: JobRecord, task_ids: Iterable[str]) -> list[TxnOp]:
    return [
        put_op(
            f"{FRAMEWORK_TASKS}{job.job_id}/{task_id}", _dumps(task_document(job.tasks[task_id]))
        )
        for task_id in task_ids
        if task_id in job.tasks
    ]


def take_dirty(
    jobs: JobManager, job_ids: Iterable[str] | None = None
) -> tuple[list[TxnOp], Callable[[], None]]:
    """The writes of every changed task record and job header (of ``job_ids``, or of
    all jobs), taken off the dirty sets; and a function that puts them back (the
    write failed: tried again at the next flush)."""
    ops: list[TxnOp] = []
    taken: list[tuple[str, set[str], bool]] = []
    wanted = sorted(jobs.dirty | set(jobs.dirty_tasks)) if job_ids is None else job_ids
    for job_id in wanted:
        job = jobs.jobs.get(job_id)
        if job is None or not job.stored:
            continue
        tasks = jobs.dirty_tasks.pop(job_id, set())
        header = job_id in jobs.dirty
        jobs.dirty.discard(job_id)
        ops.extend(task_ops(job, sorted(tasks)))
        if header:
            ops.append(header_op(job, jobs.epoch))
        taken.append((job_id, tasks, header))

    def put_back() -> None:
        for job_id, tasks, header in taken:
            if job_id in jobs.jobs:
                jobs.dirty_tasks.setdefault(job_id, set()).update(tasks)
                if header:
                    jobs.dirty.add(job_id)

    return ops, put_back


def checkpoint_op(job_id: str, task_id: str, state: bytes) -> TxnOp:
    return put_op(f"{FRAMEWORK_CHECKPOINTS}{job_id}/{task_id}", state)


def delete_job_ops(job_id: str) -> list[TxnOp]:
    """Every piece of a job: header, specs, tasks, checkpoints, endpoints."""
    return [
        delete_op(FRAMEWORK_JOBS + job_id),
        *(
            delete_op(f"{prefix}{job_id}/", prefix=True)
            for prefix in (
                FRAMEWORK_SPECS,
                FRAMEWORK_TASKS,
                FRAMEWORK_CHECKPOINTS,
                FRAMEWORK_ENDPOINTS,
            )
        ),
    ]


def endpoint_op(job_id: str, task_id: str, name: str, addr: str) -> TxnOp:
    return put_op(f"{FRAMEWORK_ENDPOINTS}{job_id}/{task_id}/{name}", addr)


class FrameworkStore:
    def __init__(self, meta: MetaLike) -> None:
        self.meta = meta
        self.failures = 0
        self.epoch: int | None = None  # set when leading: framework writes are fenced by it
        self._executor_leases: dict[str, int] = {}

    def apply_fenced(self, ops: Sequence[TxnOp]) -> None:
        """``ops``, in order, in as many fenced transactions as the metastore's limits
        ask (``MAX_TXN_OPS`` operations, about ``MAX_TXN_BYTES`` a transaction)."""
        batch: list[TxnOp] = []
        size = 0
        for op in ops:
            cost = len(getattr(op, "key", b"")) + len(getattr(op, "value", b""))
            if batch and (len(batch) == MAX_TXN_OPS or size + cost > MAX_TXN_BYTES):
                self._fenced(batch)
                batch, size = [], 0
            batch.append(op)
            size += cost
        if batch:
            self._fenced(batch)

    def _fenced(self, ops: Sequence[TxnOp]) -> None:
        """Apply ``ops`` only while this master still holds the leadership.

        The transaction compares the election key's create_revision with the
        epoch, so a master that lost the key without noticing cannot overwrite
        what the new leader decided: it gets ``LostLeadership`` and must stop.
        Without an epoch (no election: tests, tools) the ops are applied as is."""
        compare = (
            [] if self.epoch is None else [Compare.create_revision(ELECTION_KEY) == self.epoch]
        )
        result = self.meta.txn(compare, ops)
        if not result.succeeded:
            raise LostLeadership(f"the election key is no longer at epoch {self.epoch}")

    def save_job(self, job: JobRecord) -> None:
        """Write a whole job (specs, every task that has moved, header last), fenced."""
        moved = [t.task_id for t in job.tasks.values() if t.attempt or t.state.value != "pending"]
        self.apply_fenced([*spec_ops(job), *task_ops(job, moved), header_op(job, self.epoch or 0)])

    def delete_job(self, job_id: str) -> None:
        """Forget a job for good, every piece of it (fenced, one txn)."""
        self._fenced(delete_job_ops(job_id))

    def save_checkpoint(self, job_id: str, task_id: str, state: bytes) -> None:
        """A task's checkpoint (msgpack), fenced, durable before the task is told it is saved."""
        self._fenced([checkpoint_op(job_id, task_id, state)])

    def save_endpoint(self, job_id: str, task_id: str, name: str, addr: str) -> None:
        self._fenced([endpoint_op(job_id, task_id, name, addr)])

    def drop_checkpoints(self, job_id: str) -> None:
        """A job ended: its checkpoints and endpoints are of no more use (fenced, one txn).

        ``LostLeadership`` is raised; any other failure is only logged (the keys
        are garbage, not state: a job that ended never reads them again)."""
        ops = [
            delete_op(f"{p}{job_id}/", prefix=True)
            for p in (FRAMEWORK_CHECKPOINTS, FRAMEWORK_ENDPOINTS)
        ]
        try:
            self._fenced(ops)
        except LostLeadership:
            raise
        except ZdfError as exc:
            log.warning("could not drop the checkpoints of %s: %s", job_id, exc)

    def load_checkpoints(self) -> dict[tuple[str, str], bytes]:
        out = {}
        for kv in self.meta.range(FRAMEWORK_CHECKPOINTS):
            job_id, _, task_id = kv.key.decode()[len(FRAMEWORK_CHECKPOINTS) :].partition("/")
            out[(job_id, task_id)] = bytes(kv.value)
        return out

    def load_endpoints(self) -> dict[tuple[str, str, str], str]:
        out = {}
        for kv in self.meta.range(FRAMEWORK_ENDPOINTS):
            parts = kv.key.decode()[len(FRAMEWORK_ENDPOINTS) :].split("/")
            if len(parts) == 3:
                out[(parts[0], parts[1], parts[2])] = kv.value.decode()
        return out

    def load_jobs(self) -> list[dict[str, Any]]:
        """Job documents as ``JobManager.restore`` takes them, rebuilt from the pieces."""
        specs = self._pieces(FRAMEWORK_SPECS)
        states = self._pieces(FRAMEWORK_TASKS)
        docs = []
        for kv in self.meta.range(FRAMEWORK_JOBS):
            try:
                doc = json.loads(kv.value)
            except ValueError:
                log.warning("skipping an unreadable job record %r", kv.key)
                continue
            job_id = str(doc.get("id"))
            chunks = specs.get(job_id, {})
            if "chunks" in doc:  # pieces; else a whole record of an older master
                tasks: list[Any] = []
                for name in sorted(chunks):
                    tasks.extend(chunks[name])
                doc["spec"] = {**doc["spec"], "settings": doc.get("settings") or {}, "tasks": tasks}
                doc["tasks"] = list(states.get(job_id, {}).values())
            docs.append(doc)
        return docs

    def _pieces(self, prefix: str) -> dict[str, dict[str, Any]]:
        """job id -> piece name -> decoded piece, for every key under ``prefix``."""
        out: dict[str, dict[str, Any]] = {}
        for kv in self.meta.range(prefix):
            job_id, _, name = kv.key.decode()[len(prefix) :].partition("/")
            try:
                out.setdefault(job_id, {})[name] = json.loads(kv.value)
            except ValueError:
                log.warning("skipping an unreadable piece %r", kv.key)
        return out

    # -- discovery ----------------------------------------------------------
    def register_executor(self, info: dict[str, Any], ttl: float) -> None:
        executor_id = str(info["id"])
        self.forget_executor(executor_id)
        lease = self.meta.lease_grant(ttl)
        self._executor_leases[executor_id] = lease
        self.meta.put(DISCOVERY_EXECUTORS + executor_id, _dumps(info), lease=lease)

    def keep_executors_alive(self, executor_ids: list[str]) -> None:
        for executor_id in executor_ids:
            lease = self._executor_leases.get(executor_id)
            if lease is not None:
                self.meta.lease_keepalive(lease)

    def forget_executor(self, executor_id: str) -> None:
        lease = self._executor_leases.pop(executor_id, None)
        if lease is not None:
            try:
                self.meta.lease_revoke(lease)
            except ZdfError as exc:
                log.warning("could not revoke the lease of %s: %s", executor_id, exc)

    def register_master(self, name: str, info: dict[str, Any], ttl: float) -> int:
        lease = self.meta.lease_grant(ttl)
        self.meta.put(DISCOVERY_MASTERS + name, _dumps(info), lease=lease)
        return lease


def _dumps(doc: dict[str, Any]) -> bytes:
    """Records are JSON, so that ``zdf meta get`` shows them as they are."""
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def _dumps_list(items: list[Any]) -> bytes:
    return json.dumps(items, separators=(",", ":"), default=str).encode()
