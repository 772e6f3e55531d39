"""The job manager: jobs and their tasks, from submission to a terminal state.

This module holds the bookkeeping only; it sends nothing. The master calls it
and acts on what it returns (tasks to start, tasks to cancel), which keeps it
testable without sockets. Every change marks the job dirty; the master persists
dirty jobs to the metastore's framework prefix in one batch.

Each placement of a task is a new ``attempt``; reports that name an older
attempt come from a zombie and are ignored.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zdf.errors import JobError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.scheduler import Capacity, place_tasks
from zdf.master.states import (
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL_JOB_STATES,
    JobState,
    TaskState,
    can_move,
)

DEFAULT_MAX_RETRIES = 3


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "name": self.spec.name,
            "type": self.spec.job_type,
            "state": self.state.value,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "token": self.token,
            "tasks": [t.to_dict() for t in self.tasks.values()],
        }

    def counts(self) -> Counter[str]:
        return Counter(t.state.value for t in self.tasks.values())


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
        self._tokens: dict[str, str] = {}
        self._seq = itertools.count(1)

    # -- submission ---------------------------------------------------------
    def submit(self, spec: JobSpec, token: str | None = None) -> JobRecord:
        """Accept a job; a retried submission with the same token gets the same job."""
        if token and token in self._tokens:
            return self.jobs[self._tokens[token]]
        job_id = f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        tasks = {t.task_id: TaskRecord(job_id, t) for t in spec.tasks}
        job = JobRecord(job_id, spec, tasks, token=token)
        self.jobs[job_id] = job
        if token:
            self._tokens[token] = job_id
        self.dirty.add(job_id)
        return job

    def forget(self, job_id: str) -> JobRecord | None:
        """Drop an ended job (``zdf job delete``, retention); its token may be reused."""
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.dirty.discard(job_id)
            if job.token:
                self._tokens.pop(job.token, None)
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
        used: Counter[str] = Counter()
        for job in self.jobs.values():
            for task in job.tasks.values():
                if task.executor and task.state in (TaskState.SCHEDULED, TaskState.RUNNING):
                    used[task.executor] += 1
        return used

    def place_pending(self, slots: dict[str, int]) -> list[Dispatch]:
        """Place every pending task that fits; ``slots`` is executor id -> total slots."""
        used = self.used_slots()
        free = {e: n - used[e] for e, n in slots.items()}
        dispatches: list[Dispatch] = []
        for job in self.jobs.values():
            if job.state in TERMINAL_JOB_STATES:
                continue
            pending = [t.task_id for t in job.tasks.values() if t.state is TaskState.PENDING]
            if not pending:
                continue
            load = Counter(
                t.executor
                for t in job.tasks.values()
                if t.executor and t.state is not TaskState.PENDING
            )
            capacity = [Capacity(e, n) for e, n in free.items() if n > 0]
            groups = {t.task_id: t.spec.group for t in job.tasks.values() if t.spec.group}
            homes = {
                t.spec.group: t.executor
                for t in job.tasks.values()
                if t.spec.group and t.executor and t.state is not TaskState.PENDING
            }
            placed = place_tasks(pending, capacity, load, groups, homes)
            for task_id, executor_id in placed.items():
                task = job.tasks[task_id]
                task.attempt += 1
                task.executor = executor_id
                self._move_task(job, task, TaskState.SCHEDULED)
                free[executor_id] -= 1
                dispatches.append(Dispatch(executor_id, job.job_id, task.spec, task.attempt))
        return dispatches

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
        states = [t.state for t in job.tasks.values()]
        if all(s is TaskState.FINISHED for s in states):
            self._move_job(job, JobState.FINISHED)
        elif any(s is TaskState.RUNNING for s in states) and job.state is JobState.PENDING:
            self._move_job(job, JobState.RUNNING)

    def _move_task(self, job: JobRecord, task: TaskRecord, state: TaskState) -> None:
        if not can_move(TASK_TRANSITIONS, task.state, state):  # type: ignore[arg-type]
            return
        task.state = state
        now = time.time()
        if state is TaskState.RUNNING and task.started_at is None:
            task.started_at = now
        if state in (TaskState.FINISHED, TaskState.CANCELED):
            task.finished_at = now
        self.dirty.add(job.job_id)

    def _move_job(self, job: JobRecord, state: JobState) -> None:
        if not can_move(JOB_TRANSITIONS, job.state, state):  # type: ignore[arg-type]
            return
        job.state = state
        now = time.time()
        if state is JobState.RUNNING and job.started_at is None:
            job.started_at = now
        if state in TERMINAL_JOB_STATES:
            job.finished_at = now
        self.dirty.add(job.job_id)
