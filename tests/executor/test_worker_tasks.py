"""A worker process's tasks, driven by a fake executor in this process: a task that
ended holds nothing afterwards (the sockets, timers and files it had are released)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from tests.runtime.helpers import PortThenFinish
from zdf import protocol as P
from zdf.executor.worker import Worker
from zdf.jobs.spec import TaskSpec
from zdf.wire.batchcall import serve_batch
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import free_port, make_socket

pytestmark = pytest.mark.timeout(30)

OPERATOR = "tests.runtime.helpers:PortThenFinish"


class FakeExecutor:
    """The executor's side of a worker's control socket: records what the worker says."""

    def __init__(self, worker_ctl: str, reactor: Any) -> None:
        self.ready = False
        self.states: list[dict[str, Any]] = []
        handlers = {
            "ready": self._ready,
            P.TASK_STATE: lambda call: self.states.append(call.body),
            P.PUBLISH_ENDPOINT: lambda call: None,
            P.PROGRESS: lambda call: None,
            P.BATCH: serve_batch,  # a turn's reports in one message, as the executor takes them
        }
        self.channel = Channel(reactor, make_socket(zmq.ROUTER, bind=worker_ctl), handlers)

    def _ready(self, call: Call) -> None:
        self.ready = True

    def start(self, task_id: str, attempt: int = 0, **params: Any) -> None:
        spec = TaskSpec(task_id, "op", OPERATOR, params)
        body = {"job_id": "job", "task": spec.to_dict(), "attempt": attempt}
        self.channel.notify(P.START_TASK, body, peer=b"w0")

    def state_of(self, task_id: str) -> str | None:
        seen = [s["state"] for s in self.states if s["task_id"] == task_id]
        return seen[-1] if seen else None


@pytest.fixture
def host() -> Iterator[tuple[Worker, FakeExecutor]]:
    ctl = f"tcp://127.0.0.1:{free_port()}"
    worker = Worker(ctl, "w0", "127.0.0.1", "", os.getppid())
    executor = FakeExecutor(ctl, worker.reactor)
    PortThenFinish.made.clear()
    try:
        run_until(worker, lambda: executor.ready)
        yield worker, executor
    finally:
        worker.shutdown()
        executor.channel.close()
        worker.reactor.close()


def run_until(worker: Worker, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    worker.reactor.run(until=cond, deadline=time.monotonic() + timeout)
    assert cond()


def open_sockets() -> int:
    return sum(not s.closed for s in getattr(zmq.Context.instance(), "_sockets", ()))


def test_a_finished_task_is_closed_once_its_finish_is_reported(
    host: tuple[Worker, FakeExecutor],
) -> None:
    worker, executor = host
    before = open_sockets()
    executor.start("t0", ticks=3)
    run_until(worker, lambda: executor.state_of("t0") == "finished")
    [op] = PortThenFinish.made
    assert op.closed and op.out.closed and op.out.hub.closed  # its last port: the hub too
    assert not op._timers
    assert worker.tasks == {}
    assert open_sockets() == before


def test_a_task_that_finishes_as_it_opens_is_not_kept(host: tuple[Worker, FakeExecutor]) -> None:
    worker, executor = host
    before = open_sockets()
    executor.start("t0", ticks=0)
    run_until(worker, lambda: executor.state_of("t0") == "finished")
    [op] = PortThenFinish.made
    assert op.closed and worker.tasks == {}
    assert open_sockets() == before


def test_a_new_attempt_closes_the_one_it_supersedes(host: tuple[Worker, FakeExecutor]) -> None:
    worker, executor = host
    executor.start("t0", attempt=0, ticks=-1)
    run_until(worker, lambda: len(PortThenFinish.made) == 1)
    executor.start("t0", attempt=1, ticks=-1)
    run_until(worker, lambda: len(PortThenFinish.made) == 2)
    first, second = PortThenFinish.made
    assert first.closed and first.out.closed and first.out.id not in first.out.hub.endpoints
    assert not second.closed
