"""What the master keeps in the metastore.

Keys (framework and discovery prefixes, DESIGN.md "Metastore")::

    /zdf/discovery/masters/<name>    {addr, heartbeat_addr, epoch}, under a lease
    /zdf/discovery/executors/<id>    {id, addr, slots, host}, under a lease per executor
    /zdf/framework/jobs/<job_id>     the job record with its spec and tasks
    /zdf/framework/checkpoints/<job_id>/<task_id>   a task's last checkpoint (msgpack)
    /zdf/framework/endpoints/<job_id>/<task_id>/<name>   where a task listens
    /zdf/election/master             the leading master, under its lease (election.py)

Records are JSON so that ``zdf meta get`` shows them readably. A job is written
once, synchronously, before its submission is acknowledged; later changes are
batched: the reactor flushes dirty jobs on a short timer, so a burst of task
reports costs one round of writes, not one per report. The metastore being away
never stops the master: a failed flush keeps the jobs dirty and is tried again.

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
from collections.abc import Sequence
from typing import Any, Protocol

from zdf.errors import ZdfError
from zdf.master.election import ELECTION_KEY, LostLeadership
from zdf.master.jobs import JobManager, JobRecord
from zdf.metastore.commands import TxnOp
from zdf.metastore.txn import Compare, delete_op, put_op

log = logging.getLogger(__name__)

DISCOVERY_MASTERS = "/zdf/discovery/masters/"
DISCOVERY_EXECUTORS = "/zdf/discovery/executors/"
FRAMEWORK_JOBS = "/zdf/framework/jobs/"
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


def job_document(job: JobRecord) -> dict[str, Any]:
    return {**job.to_dict(), "spec": job.spec.as_dict}


class FrameworkStore:
    def __init__(self, meta: MetaLike) -> None:
        self.meta = meta
        self.failures = 0
        self.epoch: int | None = None  # set when leading: framework writes are fenced by it
        self._executor_leases: dict[str, int] = {}

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
        """Write a job record (with its tasks and their placements), fenced.

        The record names the epoch that wrote it, so the metastore's history shows
        which leader wrote what (a deposed one writes nothing: the fence)."""
        doc = {**job_document(job), "written_epoch": self.epoch}
        self._fenced([put_op(FRAMEWORK_JOBS + job.job_id, _dumps(doc))])

    def flush(self, jobs: JobManager) -> None:
        for job_id in sorted(jobs.dirty):
            try:
                self.save_job(jobs.jobs[job_id])
            except LostLeadership:
                raise
            except ZdfError as exc:
                self.failures += 1
                log.warning("could not persist job %s: %s", job_id, exc)
                return
            jobs.dirty.discard(job_id)

    def save_checkpoint(self, job_id: str, task_id: str, state: bytes) -> None:
        """A task's checkpoint (msgpack), fenced, durable before the task is told it is saved."""
        self._fenced([put_op(f"{FRAMEWORK_CHECKPOINTS}{job_id}/{task_id}", state)])

    def save_endpoint(self, job_id: str, task_id: str, name: str, addr: str) -> None:
        self._fenced([put_op(f"{FRAMEWORK_ENDPOINTS}{job_id}/{task_id}/{name}", addr)])

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
        docs = []
        for kv in self.meta.range(FRAMEWORK_JOBS):
            try:
                docs.append(json.loads(kv.value))
            except ValueError:
                log.warning("skipping an unreadable job record %r", kv.key)
        return docs

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
