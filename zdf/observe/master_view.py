"""What the master shows: a snapshot of its state (taken on its loop) and its metrics.

``snapshot`` runs on the master's reactor thread (through the ``LoopBridge``)
and copies what the metrics, ``/health`` and the dashboard need into plain
dicts and lists; everything after that runs on the HTTP thread and never
touches the master's objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from zdf.master.states import TERMINAL_JOB_STATES, ExecutorState, JobState, TaskState
from zdf.observe import families as F

if TYPE_CHECKING:
    from zdf.master.server import Master

RECENT_JOBS = 20
"""Finished jobs the dashboard lists (every unfinished job is listed)."""


def snapshot(master: Master) -> dict[str, Any]:
    used = master.jobs.used_slots()
    executors = []
    for executor_id, info in sorted(master.executors.items()):
        row = info.to_dict(
            master.liveness.state(executor_id), master.liveness.last_seen(executor_id)
        )
        row["used"] = used.get(executor_id, 0)
        executors.append(row)
    task_states: Counter[str] = Counter()
    records: list[tuple[str, str, str, float]] = []
    jobs = []
    for job in master.jobs.jobs.values():
        task_states.update(t.state.value for t in job.tasks.values())
        for task in job.tasks.values():
            if "records" in task.progress:
                records.append((job.job_id, task.task_id, task.spec.kind, task.progress["records"]))
        jobs.append(job)
    live = [j for j in jobs if j.state not in TERMINAL_JOB_STATES]
    done = sorted(
        (j for j in jobs if j.state in TERMINAL_JOB_STATES),
        key=lambda j: j.finished_at or j.submitted_at,
    )[-RECENT_JOBS:]
    return {
        "name": master.config.name,
        "addr": master.config.master_addr,
        "epoch": master.epoch,
        "leading": master.leading,
        "leader": None if master.leader is None else master.leader.addr,
        "executors": executors,
        "jobs": [j.to_dict() for j in sorted(live + done, key=lambda j: j.submitted_at)],
        "job_states": dict(Counter(j.state.value for j in jobs)),
        "task_states": dict(task_states),
        "task_records": records,
        "functions": master.functions.status(),
        "dropped": dict(master.channel.stats),
        "callback_errors": master.reactor.callback_errors,
    }


def healthy(snap: dict[str, Any]) -> bool:
    return True  # a leader and a standby both serve (a standby answers with the leader's address)


def metrics(snap: dict[str, Any]) -> Iterator[Metric]:
    yield F.gauge("master_leader", "1 while this master leads, 0 as a standby", snap["leading"])
    yield F.gauge("master_epoch", "The leading master's epoch (fencing token)", snap["epoch"])
    states = Counter(e["state"] for e in snap["executors"])
    yield F.by_state("executors", "Executors by state", states, [s.value for s in ExecutorState])
    yield F.labelled_gauge(
        "executor_slots",
        "Slots (tasks it may run at once) of each executor the master knows",
        ["executor"],
        (([e["id"]], e["slots"]) for e in snap["executors"]),
    )
    yield F.labelled_gauge(
        "executor_slots_used",
        "Slots in use (tasks scheduled or running) on each executor",
        ["executor"],
        (([e["id"]], e["used"]) for e in snap["executors"]),
    )
    yield F.by_state("jobs", "Jobs by state", snap["job_states"], [s.value for s in JobState])
    yield F.by_state("tasks", "Tasks by state", snap["task_states"], [s.value for s in TaskState])
    yield F.labelled_gauge(
        "task_records",
        "Records a task's current attempt has processed (its last progress report)",
        ["job", "task", "kind"],
        (([job, task, kind], n) for job, task, kind, n in snap["task_records"]),
    )
    fn = snap["functions"]
    yield F.counter("function_tasks_submitted", "Function tasks submitted", fn.get("submitted", 0))
    yield F.counter("function_tasks_completed", "Function tasks completed", fn.get("completed", 0))
    yield F.counter(
        "function_tasks_failed", "Function tasks whose function raised", fn.get("failed", 0)
    )
    yield F.counter("function_tasks_retried", "Function tasks run again", fn.get("retried", 0))
    yield F.gauge("function_tasks_queued", "Function tasks waiting for a worker", fn["queued"])
    yield F.gauge("function_tasks_inflight", "Function tasks on a worker now", fn["inflight"])
    yield F.gauge("function_workers", "Workers that run function tasks", fn["workers"])
    yield from F.loop_counters(snap)
