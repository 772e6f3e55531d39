"""An executor puts the tasks of one placement group on one worker process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zdf.config import ExecutorConfig, load_config
from zdf.executor.pool import WorkerPool
from zdf.executor.server import Executor
from zdf.wire.sockets import free_port


def ready_pool(count: int) -> WorkerPool:
    pool = WorkerPool(count, "ipc:///nowhere", "127.0.0.1", "/tmp", "info", lambda *_: None)
    for slot in pool.slots.values():
        slot.ready = True
    return pool


def test_the_preferred_worker_is_taken_when_ready_else_the_least_loaded() -> None:
    pool = ready_pool(3)
    pool.slots["w0"].tasks.update({("j", "a"), ("j", "b")})
    pool.slots["w2"].tasks.add(("j", "c"))
    assert pool.least_loaded().name == "w1"
    assert pool.least_loaded(prefer="w0").name == "w0"  # its group is there, load or not
    pool.slots["w0"].ready = False
    assert pool.least_loaded(prefer="w0").name == "w1"


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Executor]:
    config = load_config(
        ExecutorConfig,
        data={
            "join": [f"127.0.0.1:{free_port()}"],  # no master: placement needs none
            "worker-addr": f"127.0.0.1:{free_port()}",
            "data-dir": str(tmp_path),
            "workers": 2,
        },
        env={},
    )
    ex = Executor(config)
    for slot in ex.pool.slots.values():  # the workers are never started: placement only
        slot.ready = True
    try:
        yield ex
    finally:
        ex.close()


def start(ex: Executor, task_id: str, group: str = "", job_id: str = "job") -> str:
    task = {"task_id": task_id, "kind": "op", "operator": "m:C", "params": {}}
    if group:
        task["group"] = group
    assert ex._place({"job_id": job_id, "task": task, "attempt": 1})
    return ex.tasks[(job_id, task_id)].worker


def test_a_group_shares_a_worker_and_other_tasks_spread(executor: Executor) -> None:
    first = start(executor, "binlog-0", "stream-0")
    other = start(executor, "binlog-1", "stream-1")
    assert other != first  # a new group goes to the least loaded worker
    assert start(executor, "receive-0", "stream-0") == first
    assert start(executor, "sink-0", "stream-0") == first
    assert start(executor, "receive-1", "stream-1") == other  # 3 tasks on first, 2 here
    # the same group name in another job is another group: the least loaded worker
    assert start(executor, "binlog-0", "stream-0", job_id="job2") == other
    assert start(executor, "producer-0") == first  # 3 and 3: the first by name
