"""The master's state machines: executor liveness, tasks and jobs.

States are enums; the allowed transitions of each live in one table, and
``advance`` refuses any other (a stale or duplicated report cannot move a
finished task back to running).
"""

from __future__ import annotations

from enum import Enum


class ExecutorState(str, Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"  # deregistered on a graceful shutdown (SIGTERM): not a crash


class TaskState(str, Enum):
    PENDING = "pending"  # waiting for a placement (no capacity, or its executor died)
    SCHEDULED = "scheduled"  # sent to an executor, not yet confirmed running
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


class JobState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


EXECUTOR_TRANSITIONS: dict[ExecutorState, set[ExecutorState]] = {
    ExecutorState.ALIVE: {ExecutorState.SUSPECT, ExecutorState.DEAD, ExecutorState.LEFT},
    ExecutorState.SUSPECT: {ExecutorState.ALIVE, ExecutorState.DEAD, ExecutorState.LEFT},
    ExecutorState.DEAD: set(),  # a dead executor comes back only by registering anew
    ExecutorState.LEFT: set(),  # so does one that left
}
GONE_EXECUTOR_STATES = frozenset({ExecutorState.DEAD, ExecutorState.LEFT})

TASK_TRANSITIONS: dict[TaskState, set[TaskState]] = {
    TaskState.PENDING: {TaskState.SCHEDULED, TaskState.CANCELED, TaskState.FAILED},
    TaskState.SCHEDULED: {
        TaskState.RUNNING,
        TaskState.FINISHED,
        TaskState.FAILED,
        TaskState.PENDING,
        TaskState.CANCELED,
    },
    TaskState.RUNNING: {
        TaskState.FINISHED,
        TaskState.FAILED,
        TaskState.PENDING,
        TaskState.CANCELED,
    },
    TaskState.FINISHED: set(),
    TaskState.FAILED: {TaskState.PENDING},  # a retry
    TaskState.CANCELED: set(),
}

JOB_TRANSITIONS: dict[JobState, set[JobState]] = {
    JobState.PENDING: {JobState.RUNNING, JobState.FAILED, JobState.CANCELED, JobState.FINISHED},
    JobState.RUNNING: {JobState.FINISHED, JobState.FAILED, JobState.CANCELED, JobState.PENDING},
    JobState.FINISHED: set(),
    JobState.FAILED: set(),
    JobState.CANCELED: set(),
}

TERMINAL_TASK_STATES = frozenset({TaskState.FINISHED, TaskState.CANCELED})
TERMINAL_JOB_STATES = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELED})


def can_move(table: dict[object, set[object]], old: object, new: object) -> bool:
    return old == new or new in table.get(old, set())
