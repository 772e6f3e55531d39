"""The benchmark job as a dataflow graph: ``bench_flow`` builds it with ``zdf.dataflow.Flow``.

    producer (table-num) ─custom─► binlog (streams) ─► receive ─► syncer ─► sink

The graph goes through the same path as any user's dataflow job
(``Flow.to_job`` → ``zdf.dataflow.graph``: validated, dtypes checked, expanded to
tasks ``producer-<t>``, ``binlog-<s>``, ... with their wiring and done flags);
``flow_tasks`` then adds what the benchmark job has on top of it: its placement
(a stream's four stages in one slot-sharing group ``stream-<s>``, producer t in the
slice ``stream-<t mod streams>``: one slot per stream, as the first operators had),
each task's socket count, and the job's summary task (``coordinator``, which
watches the sinks' done flags and is no stage of the stream).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from zdf.jobs.spec import TaskSpec

if TYPE_CHECKING:
    from zdf.dataflow.flow import Flow
    from zdf.jobs.bench import BenchConfig

OPS = "zdf.runtime.bench"
STAGES = ("binlog", "receive", "syncer", "sink")


def bench_flow(cfg: BenchConfig) -> Flow:
    """The benchmark's five stages as a ``Flow`` (every stage gets the bench params)."""
    from zdf.dataflow.flow import Flow  # zdf.dataflow imports zdf.jobs: not at import time

    common = cfg.params()
    streams = cfg.streams
    flow = Flow(cfg.flow_id, window=cfg.window)
    (
        flow.source("producer", f"{OPS}.stages:Producer", parallelism=cfg.table_num, **common)
        .custom()
        .apply("binlog", f"{OPS}.stages:Binlog", parallelism=streams, **common)
        .apply("receive", f"{OPS}.stages:Receive", **common)
        .apply("syncer", f"{OPS}.stages:Syncer", **common)
        .sink("sink", f"{OPS}.flowsink:Sink", **common)
    )
    return flow


def _sockets(cfg: BenchConfig, kind: str) -> int:
    """ZeroMQ sockets a task of ``kind`` opens (``zdf.jobs.cost``)."""
    return {
        "producer": cfg.streams + 1,  # its port and one peer per stream
        "binlog": cfg.table_num + 2,  # a pipe from every producer
        "receive": 3,
        "syncer": 3,
        "sink": cfg.streams + 3,  # and a barrier link per stream
    }[kind]


def flow_tasks(cfg: BenchConfig, coordinator: TaskSpec) -> list[TaskSpec]:
    """The graph's tasks placed as the benchmark job's, after ``coordinator``."""
    tasks = [coordinator]
    for task in bench_flow(cfg).to_job().tasks:
        index = int(task.task_id.rsplit("-", 1)[1])
        params: dict[str, Any] = {**task.params, "sockets": _sockets(cfg, task.kind)}
        if task.kind == "producer":
            slot, group = f"stream-{index % cfg.streams}", ""
        else:
            slot, group = "", f"stream-{index}"
            params["stream"] = index
            if task.kind == "binlog":
                params["server"] = cfg.servers[index]
        tasks.append(dataclasses.replace(task, params=params, group=group, slot=slot))
    return tasks
