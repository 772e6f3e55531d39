"""The job manager: jobs and their tasks, from submission to a terminal state.

This module holds the bookkeeping only; it sends nothing. The master calls it
and acts on what it returns (tasks to start, tasks to cancel), which keeps it
testable without sockets. Every change marks the task (``dirty_tasks``) or the
job's header (``dirty``) dirty; the master writes what changed to the
metastore's framework prefix in batches (``zdf.master.persist``).

Each placement of a task is a new ``attempt``; reports that name an older
attempt come from a zombie and are ignored.

Placement (``zdf.master.scheduler``) counts slots, not tasks: the tasks of one
slot-sharing group (``TaskSpec.slot_key``) take one slot of their executor. A
streaming job is placed whole or not at all (``JobSpec.gang``); one that does not
fit waits as Pending with its ``reason`` ("needs N slots, M free on K
executors"), and fails with it once its ``placement-timeout`` (a job setting, in
seconds) has passed. A batch job (function tasks) runs as slots free up.

Each job keeps indexes that ``_move_task`` (the one place a task changes state)
updates: its pending tasks in order, its task counts by state, and the slots it
holds (slot key -> executor and live tasks). So placing, reporting and counting
cost in proportion to what changes, not to the size of the job.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zdf.errors import JobError
from zdf.jobs.cost import task_sockets
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.scheduler import Capacity, Shortfall, place_gang, place_tasks
from zdf.master.states import (
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL_JOB_STATES,
    JobState,
    TaskState,
    can_move,
)

DEFAULT_MAX_RETRIES = 3
ACTIVE_TASK_STATES = frozenset({TaskState.SCHEDULED, TaskState.RUNNING})
PLACEMENT_TIMEOUT = "placement-timeout"
"""The job setting (seconds, 0 or absent: wait forever) after which a job that
could not be placed fails with the reason."""


@dataclass
class TaskRecord:
    job_id: str
    spec: TaskSpec
    state: TaskState = TaskState.PENDING
    executor: str | None = None
    attempt: int = 0
    failures: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "kind": self.spec.kind,
            "executor": self.executor,
            "state": self.state.value,
            "attempt": self.attempt,
            "failures": self.failures,
            "info": self.info,
            "progress": self.progress,
            "started_at": self.started_at,
        }


@dataclass
class JobRecord:
    job_id: str
    spec: JobSpec
    tasks: dict[str, TaskRecord]
    state: JobState = JobState.PENDING
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    token: str | None = None
    stored: bool = True  # False until its submission is in the metastore: not placed
    reason: str | None = None  # why it waits for a placement, while it does
    waiting_since: float | None = None  # monotonic, while it cannot be placed
    pending: dict[str, None] = field(default_factory=dict)  # pending task ids, in order
    state_counts: Counter[TaskState] = field(default_factory=Counter)
    held: dict[str, tuple[str, int]] = field(default_factory=dict)  # slot -> executor, tasks

    def __post_init__(self) -> None:
        if not self.state_counts:  # else given, for a new job (all pending: see fresh)
            self.reindex()

    @classmethod
    def fresh(
        cls, job_id: str, spec: JobSpec, tasks: dict[str, TaskRecord], **kw: Any
    ) -> JobRecord:
        """A new job, every task pending: its indexes without a pass over its tasks."""
        return cls(
            job_id,
            spec,
            tasks,
            pending=dict.fromkeys(tasks),
            state_counts=Counter({TaskState.PENDING: len(tasks)}),
            **kw,
        )

    def reindex(self) -> None:
        """Rebuild the indexes from the tasks (after a restore)."""
        self.pending = {
            t.task_id: None for t in self.tasks.values() if t.state is TaskState.PENDING
        }
        self.state_counts = Counter(t.state for t in self.tasks.values())
        self.held = {}
        for task in self.tasks.values():
            if task.executor and task.state in ACTIVE_TASK_STATES:
                _, n = self.held.get(task.spec.slot_key, (task.executor, 0))
                self.held[task.spec.slot_key] = (task.executor, n + 1)

    def to_dict(self, tasks: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.job_id,
            "name": self.spec.name,
            "type": self.spec.job_type,
            "state": self.state.value,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "token": self.token,
            "reason": self.reason,
            "slots": self.spec.slots_needed,
        }
        if tasks:
            doc["tasks"] = [t.to_dict() for t in self.tasks.values()]
        return doc

    def counts(self) -> Counter[str]:
        return Counter({s.value: n for s, n in self.state_counts.items() if n})


@dataclass(frozen=True)
class Dispatch:
    """Start this attempt of this task on this executor."""

    executor_id: str
    job_id: str
    spec: TaskSpec
    attempt: int


class JobManager:
    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.dirty: set[str] = set()
        self.dirty_tasks: dict[str, set[str]] = {}  # job -> tasks changed since written
        self.used: Counter[str] = Counter()  # executor -> slots held by live tasks
        self.epoch = 0  # the leading master's epoch: job headers name who wrote them
        self._tokens: dict[str, str] = {}
        self._seq = itertools.count(1)

    # -- submission ---------------------------------------------------------
    @staticmethod
    def new_job_id() -> str:
        return f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def submit(
        self,
        spec: JobSpec,
        token: str | None = None,
        stored: bool = True,
        job_id: str | None = None,
        tasks: dict[str, TaskRecord] | None = None,
    ) -> JobRecord:
        """Accept a job; a retried submission with the same token gets the same job.

        ``stored=False``: its submission is being written; it is not placed until
        ``stored`` is set (or it is ``forget``-ten if the write fails). ``job_id``
        and ``tasks``: made already (a submission in parts, ``zdf.master.staging``)."""
        if token and token in self._tokens:
            return self.jobs[self._tokens[token]]
        job_id = job_id or self.new_job_id()
        if tasks is None:
            tasks = {t.task_id: TaskRecord(job_id, t) for t in spec.tasks}
        job = JobRecord.fresh(job_id, spec, tasks, token=token, stored=stored)
        self.jobs[job_id] = job
        if token:
            self._tokens[token] = job_id
        if stored:
            self.dirty.add(job_id)
        return job

    def forget(self, job_id: str) -> JobRecord | None:
        """Drop a job: one whose submission could not be stored (never acknowledged), or
        an ended one (``zdf job delete``, retention); its token may be reused."""
        job = self.jobs.pop(job_id, None)
        if job is not None and job.token:
            self._tokens.pop(job.token, None)
        self.dirty.discard(job_id)
        self.dirty_tasks.pop(job_id, None)
        return job

    def restore(self, doc: dict[str, Any]) -> JobRecord:
        """Rebuild a job from its metastore record (a new leader taking over)."""
        spec = JobSpec.from_dict(doc["spec"])
        tasks = {t.task_id: TaskRecord(doc["id"], t) for t in spec.tasks}
        for saved in doc.get("tasks", []):
            task = tasks.get(saved.get("id"))
            if task is None:
                continue
            task.state = TaskState(saved.get("state", "pending"))
            task.executor = saved.get("executor")
            task.attempt = int(saved.get("attempt", 0))
            task.failures = int(saved.get("failures", 0))
            task.info = dict(saved.get("info") or {})
            task.progress = dict(saved.get("progress") or {})
            if task.state is TaskState.SCHEDULED:
                task.state = TaskState.RUNNING  # confirmed or requeued once its executor speaks
        for task in tasks.values():
            if task.state in ACTIVE_TASK_STATES and not task.executor:
                task.state = TaskState.PENDING
        job = JobRecord(
            doc["id"],
            spec,
            tasks,
            JobState(doc.get("state", "pending")),
            float(doc.get("submitted_at") or time.time()),
            doc.get("started_at"),
            doc.get("finished_at"),
            doc.get("error"),
            doc.get("token"),
        )
        self.jobs[job.job_id] = job
        for executor, _ in job.held.values():
            self.used[executor] += 1
        if job.token:
            self._tokens[job.token] = job.job_id
        return job

    def reconcile(
        self, executor_id: str, running: list[tuple[str, str, int]]
    ) -> tuple[list[tuple[str, str]], list[TaskRecord]]:
        """An executor (re)registered, reporting the attempts it runs.

        Returns the reported tasks it must stop (stale attempts, unknown or finished
        jobs) and the tasks the master had placed there that it no longer runs
        (they go back to Pending).
        """
        reported = {(job_id, task_id): attempt for job_id, task_id, attempt in running}
        stop: list[tuple[str, str]] = []
        for (job_id, task_id), attempt in reported.items():
            job = self.jobs.get(job_id)
            task = job.tasks.get(task_id) if job else None
            live = task is not None and task.state in (TaskState.SCHEDULED, TaskState.RUNNING)
            if not live or task is None or task.attempt != attempt or task.executor != executor_id:
                stop.append((job_id, task_id))
        lost = []
        for job in self.jobs.values():
            if job.state in TERMINAL_JOB_STATES:
                continue
            for task in job.tasks.values():
                if (
                    task.executor == executor_id
                    and task.state in (TaskState.SCHEDULED, TaskState.RUNNING)
                    and reported.get((job.job_id, task.task_id)) != task.attempt
                ):
                    self._requeue(job, task)
                    lost.append(task)
        return stop, lost

    def get(self, job_id: str) -> JobRecord:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}")
        return job

    # -- placement ----------------------------------------------------------
    def used_slots(self) -> Counter[str]:
        return Counter({e: n for e, n in self.used.items() if n})

    def place_pending(self, slots: dict[str, int]) -> list[Dispatch]:
        """Place what can be placed; ``slots`` is live executor id -> its total slots.

        Jobs are served in the order they came; a streaming job that does not fit
        whole waits (with its reason) and lets a later, smaller job by."""
        free = {e: n - self.used[e] for e, n in slots.items()}
        dispatches: list[Dispatch] = []
        for job in self.jobs.values():
            if job.state in TERMINAL_JOB_STATES or not job.pending or not job.stored:
                continue
            if job.spec.gang:
                self._place_gang(job, free, dispatches)
            else:
                self._place_batch(job, free, dispatches)
        return dispatches

    def _place_gang(self, job: JobRecord, free: dict[str, int], out: list[Dispatch]) -> None:
        """Every pending task of the job, or none: slots it holds take their tasks
        back; the slots it lacks must all fit now."""
        lacking: dict[str, None] = {}
        for task_id in job.pending:
            key = job.tasks[task_id].spec.slot_key
            if key not in job.held:
                lacking[key] = None
            elif job.held[key][0] not in free:
                return  # its executor is not alive (suspect): wait for its verdict
        load = Counter(executor for executor, _ in job.held.values())
        capacity = [Capacity(e, max(0, n)) for e, n in free.items()]
        placed = place_gang(list(lacking), capacity, load)
        if isinstance(placed, Shortfall):
            if job.reason is None:
                job.waiting_since = time.monotonic()
            job.reason = str(placed)
            return
        job.reason = job.waiting_since = None
        homes = {key: executor for key, (executor, _) in job.held.items()}
        homes.update(placed)
        for executor in placed.values():
            free[executor] -= 1
        # The costliest first, so that an executor fits its big tasks (a binlog with a
        # pipe per table) into its worker processes before the many small ones.
        tasks = sorted((job.tasks[t] for t in job.pending), key=lambda t: -_cost(t.spec))
        for task in tasks:
            out.append(self._assign(job, task, homes[task.spec.slot_key]))

    def _place_batch(self, job: JobRecord, free: dict[str, int], out: list[Dispatch]) -> None:
        """As many pending tasks as there are free slots (a task shares no slot)."""
        room = sum(n for n in free.values() if n > 0)
        if room <= 0:
            return
        load = Counter(executor for executor, _ in job.held.values())
        capacity = [Capacity(e, n) for e, n in free.items() if n > 0]
        pending = list(itertools.islice(job.pending, room))
        for task_id, executor in place_tasks(pending, capacity, load).items():
            free[executor] -= 1
            out.append(self._assign(job, job.tasks[task_id], executor))

    def _assign(self, job: JobRecord, task: TaskRecord, executor: str) -> Dispatch:
        task.attempt += 1
        task.executor = executor
        self._move_task(job, task, TaskState.SCHEDULED)
        return Dispatch(executor, job.job_id, task.spec, task.attempt)

    def expired(self, now: float) -> list[JobRecord]:
        """Jobs that waited for a placement longer than their ``placement-timeout``."""
        out = []
        for job in self.jobs.values():
            if job.waiting_since is None or job.state in TERMINAL_JOB_STATES:
                continue
            timeout = float(job.spec.settings.get(PLACEMENT_TIMEOUT) or 0)
            if timeout > 0 and now - job.waiting_since >= timeout:
                out.append(job)
        return out

    def fail_unplaced(self, job: JobRecord) -> list[tuple[str, str, str]]:
        """Fail a job that could not be placed in time; (executor, job, task) to cancel."""
        timeout = float(job.spec.settings.get(PLACEMENT_TIMEOUT) or 0)
        job.error = f"not placed within {timeout:g}s: {job.reason}"
        job.waiting_since = None
        return self._finish_job(job, JobState.FAILED)

    def unplace(self, dispatches: list[Dispatch]) -> None:
        """Take back placements that could not be recorded; the tasks wait as Pending.

        Their attempt numbers stay used: an attempt number is never given twice."""
        for d in dispatches:
            job = self.jobs.get(d.job_id)
            task = job.tasks.get(d.spec.task_id) if job else None
            if task is not None and task.attempt == d.attempt:
                self._requeue(job, task)  # type: ignore[arg-type]

    # -- reports ------------------------------------------------------------
    def task_state(
        self,
        job_id: str,
        task_id: str,
        attempt: int,
        state: TaskState,
        info: dict[str, Any] | None = None,
        executor_id: str | None = None,
    ) -> list[tuple[str, str, str]]:
        """Apply a report; returns (executor, job, task) pairs to cancel if the job failed."""
        job = self.jobs.get(job_id)
        task = job.tasks.get(task_id) if job else None
        if job is None or task is None or attempt != task.attempt:
            return []  # unknown or stale attempt: a zombie's report
        if executor_id is not None and task.executor != executor_id:
            return []
        if info:
            task.info.update(info)
            self.dirty_tasks.setdefault(job.job_id, set()).add(task_id)
        if state is TaskState.FAILED:
            task.failures += 1
            retries = int(task.spec.params.get("max_retries", DEFAULT_MAX_RETRIES))
            if task.failures <= retries and job.state not in TERMINAL_JOB_STATES:
                self._move_task(job, task, TaskState.FAILED)
                self._requeue(job, task)
                return []
            self._move_task(job, task, TaskState.FAILED)
            if job.state not in TERMINAL_JOB_STATES:
                # Only the failure that ends the job names it: a late report of a task
                # canceled meanwhile must not rewrite the error (it stays canceled).
                job.error = f"task {task_id} failed: {task.info.get('error', 'unknown error')}"
            return self._finish_job(job, JobState.FAILED)
        self._move_task(job, task, state)
        self._update_job(job)
        return []

    def progress(self, job_id: str, task_id: str, attempt: int, counters: dict[str, float]) -> None:
        job = self.jobs.get(job_id)
        task = job.tasks.get(task_id) if job else None
        if task is not None and task.attempt == attempt:
            task.progress = counters

    def executor_lost(self, executor_id: str) -> list[TaskRecord]:
        """Every unfinished task on a dead executor goes back to Pending."""
        moved = []
        for job in self.jobs.values():
            if job.state in TERMINAL_JOB_STATES:
                continue
            for task in job.tasks.values():
                if task.executor == executor_id and task.state in (
                    TaskState.SCHEDULED,
                    TaskState.RUNNING,
                ):
                    self._requeue(job, task)
                    moved.append(task)
        return moved

    def cancel(self, job_id: str) -> list[tuple[str, str, str]]:
        job = self.get(job_id)
        if job.state in TERMINAL_JOB_STATES:
            return []
        return self._finish_job(job, JobState.CANCELED)

    # -- internals ----------------------------------------------------------
    def _requeue(self, job: JobRecord, task: TaskRecord) -> None:
        self._move_task(job, task, TaskState.PENDING)
        task.executor = None

    def _finish_job(self, job: JobRecord, state: JobState) -> list[tuple[str, str, str]]:
        to_cancel = []
        for task in job.tasks.values():
            if task.state in (TaskState.SCHEDULED, TaskState.RUNNING, TaskState.PENDING):
                if task.executor and task.state is not TaskState.PENDING:
                    to_cancel.append((task.executor, job.job_id, task.task_id))
                self._move_task(job, task, TaskState.CANCELED)
        self._move_job(job, state)
        return to_cancel

    def _update_job(self, job: JobRecord) -> None:
        counts = job.state_counts
        if counts[TaskState.FINISHED] == len(job.tasks):
            self._move_job(job, JobState.FINISHED)
        elif counts[TaskState.RUNNING] and job.state is JobState.PENDING:
            self._move_job(job, JobState.RUNNING)

    def _move_task(self, job: JobRecord, task: TaskRecord, state: TaskState) -> None:
        old = task.state
        if not can_move(TASK_TRANSITIONS, old, state):  # type: ignore[arg-type]
            return
        task.state = state
        if old is not state:
            self._reindex_move(job, task, old, state)
        now = time.time()
        if state is TaskState.RUNNING and task.started_at is None:
            task.started_at = now
        if state in (TaskState.FINISHED, TaskState.CANCELED):
            task.finished_at = now
        self.dirty_tasks.setdefault(job.job_id, set()).add(task.task_id)

    def _reindex_move(
        self, job: JobRecord, task: TaskRecord, old: TaskState, new: TaskState
    ) -> None:
        job.state_counts[old] -= 1
        job.state_counts[new] += 1
        if old is TaskState.PENDING:
            job.pending.pop(task.task_id, None)
        elif new is TaskState.PENDING:
            job.pending[task.task_id] = None
        was, now = old in ACTIVE_TASK_STATES, new in ACTIVE_TASK_STATES
        if was == now or not task.executor:
            return
        key = task.spec.slot_key
        executor, n = job.held.get(key, (task.executor, 0))
        n += 1 if now else -1
        if n > 0:
            if key not in job.held:
                self.used[executor] += 1
            job.held[key] = (executor, n)
        elif key in job.held:
            del job.held[key]
            self.used[executor] -= 1

    def _move_job(self, job: JobRecord, state: JobState) -> None:
        if not can_move(JOB_TRANSITIONS, job.state, state):  # type: ignore[arg-type]
            return
        job.state = state
        now = time.time()
        if state in TERMINAL_JOB_STATES:
            job.reason = job.waiting_since = None
        if state is JobState.RUNNING and job.started_at is None:
            job.started_at = now
        if state in TERMINAL_JOB_STATES:
            job.finished_at = now
        self.dirty.add(job.job_id)


def _cost(spec: TaskSpec) -> int:
    return task_sockets({"params": spec.params})
