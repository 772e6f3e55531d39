"""What an executor shows: a snapshot of its state (taken on its loop) and its metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from zdf.observe import families as F

if TYPE_CHECKING:
    from zdf.executor.server import Executor


def snapshot(executor: Executor) -> dict[str, Any]:
    slots = executor.pool.slots.values()
    return {
        "name": executor.executor_id,
        "registered": executor.registered,
        "master": executor.master_addr,
        "master_epoch": executor.master_epoch or 0,
        "slots": executor.config.slots,
        "tasks": [
            {"job": t.job_id, "task": t.task_id, "attempt": t.attempt, "kind": t.kind}
            for t in executor.tasks.values()
        ],
        "backlog": len(executor._backlog),
        "workers": len(executor.pool.slots),
        "workers_ready": sum(1 for s in slots if s.ready),
        "worker_restarts": sum(s.restarts for s in slots),
        "functions_running": sum(s.functions for s in slots),
        "dropped": dict(executor.master.stats),
        "callback_errors": executor.reactor.callback_errors,
    }


def healthy(snap: dict[str, Any]) -> bool:
    return bool(snap["registered"])


def metrics(snap: dict[str, Any]) -> Iterator[Metric]:
    yield F.gauge("executor_registered", "1 while registered with a master", snap["registered"])
    yield F.gauge(
        "executor_master_epoch", "Epoch of the master it registered with", snap["master_epoch"]
    )
    yield F.gauge("executor_slots", "Tasks this executor may run at once", snap["slots"])
    kinds = Counter(t["kind"] for t in snap["tasks"])
    yield F.labelled_gauge(
        "executor_tasks",
        "Tasks running here, by kind",
        ["kind"],
        (([k], n) for k, n in kinds.items()),
    )
    yield F.gauge("executor_tasks_waiting", "Tasks waiting for a ready worker", snap["backlog"])
    yield F.gauge("executor_workers", "Worker processes", snap["workers"])
    yield F.gauge("executor_workers_ready", "Worker processes ready", snap["workers_ready"])
    yield F.counter(
        "executor_worker_restarts", "Worker processes restarted", snap["worker_restarts"]
    )
    yield F.gauge(
        "executor_functions_running", "Function tasks running here", snap["functions_running"]
    )
    yield from F.loop_counters(snap)
