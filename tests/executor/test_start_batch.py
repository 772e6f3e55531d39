"""A placement round's starts reach an executor as one message (``start_tasks``): read
whole and refused whole when malformed or from another master's epoch; each worker
gets its share in one message; a task no worker has room for fails alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zdf import protocol as P
from zdf.config import ExecutorConfig, load_config
from zdf.errors import ProtocolError, StaleEpoch
from zdf.executor.server import Executor
from zdf.jobs.spec import TaskSpec
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.rpc import Call
from zdf.wire.sockets import close_socket, free_port, make_socket

pytestmark = pytest.mark.timeout(30)

EPOCH = 7
READY = encode(Kind.EVENT, "ready", 0, {"budget": 0})


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[tuple[Executor, dict[str, zmq.Socket[bytes]]]]:
    """An executor (not started) whose two workers are plain sockets of this test."""
    config = load_config(
        ExecutorConfig,
        data={
            "join": [f"127.0.0.1:{free_port()}"],
            "worker-addr": f"127.0.0.1:{free_port()}",
            "data-dir": str(tmp_path),
            "workers": 2,
        },
        env={},
    )
    ex = Executor(config)
    ex.master_epoch = EPOCH
    ctl = ex.ctl.sock.getsockopt_string(zmq.LAST_ENDPOINT)
    workers = {
        name: make_socket(zmq.DEALER, connect=ctl, identity=name.encode()) for name in ("w0", "w1")
    }
    try:
        for name, sock in workers.items():
            sock.send(READY)
            deadline = time.monotonic() + 10
            while not ex.pool.slots[name].ready and time.monotonic() < deadline:
                ex.reactor.run_once(0.05)
            assert ex.pool.slots[name].ready
        yield ex, workers
    finally:
        for sock in workers.values():
            close_socket(sock)
        ex.close()


def start(task_id: str, attempt: int = 1, **params: Any) -> dict[str, Any]:
    spec = TaskSpec(task_id, "op", "tests.runtime.helpers:PortThenFinish", params)
    return {"job_id": "job", "task": spec.to_dict(), "attempt": attempt, "checkpoint": None}


def batch(*starts: dict[str, Any], epoch: int = EPOCH) -> Call:
    endpoints = {"job": [["src-0", "out", "ipc:///x"]]}
    body = {"epoch": epoch, "endpoints": endpoints, "starts": list(starts)}
    return Call(None, None, P.START_TASKS, 1, body)  # type: ignore[arg-type]


def received(sock: zmq.Socket[bytes]) -> list[Any]:
    out = []
    while sock.poll(200):
        out.append(decode(sock.recv()))
    return out


def test_each_worker_gets_its_share_of_a_batch_in_one_message(
    executor: tuple[Executor, dict[str, zmq.Socket[bytes]]],
) -> None:
    ex, workers = executor
    answer = ex.on_start_tasks(batch(*(start(f"t{i}") for i in range(6))))
    assert [r["worker"] for r in answer["results"]] == ["w0", "w1"] * 3
    assert len(ex.tasks) == 6
    for name, sock in workers.items():
        [msg] = received(sock)  # one message, not one per task
        assert msg.op == P.START_TASKS
        assert [s["task"]["task_id"] for s in msg.body["starts"]] == [
            f"t{i}" for i in range(6) if (i % 2 == 0) == (name == "w0")
        ]
        assert msg.body["endpoints"] == {"job": [["src-0", "out", "ipc:///x"]]}  # once a job


@pytest.mark.parametrize(
    "bad",
    [
        {"job_id": "job", "task": {"task_id": "t9"}},  # no attempt
        {"job_id": "job", "task": {}, "attempt": 1},  # no task id
        "not a start",
    ],
)
def test_a_malformed_start_refuses_the_whole_batch(
    executor: tuple[Executor, dict[str, zmq.Socket[bytes]]], bad: Any
) -> None:
    ex, workers = executor
    with pytest.raises(ProtocolError):
        ex.on_start_tasks(batch(start("t0"), start("t1"), bad))
    assert ex.tasks == {} and ex._backlog == []  # nothing of it applied
    assert all(received(sock) == [] for sock in workers.values())


def test_a_batch_from_a_master_of_another_epoch_is_refused_whole(
    executor: tuple[Executor, dict[str, zmq.Socket[bytes]]],
) -> None:
    ex, workers = executor
    ex.on_start_tasks(batch(start("t0")))
    with pytest.raises(StaleEpoch):
        ex.on_start_tasks(batch(start("t0", attempt=2), start("t1"), epoch=EPOCH - 1))
    assert list(ex.tasks) == [("job", "t0")] and ex.tasks[("job", "t0")].attempt == 1
    assert [len(received(sock)) for sock in workers.values()] == [1, 0]  # the first only


def test_a_start_no_worker_has_room_for_fails_alone(
    executor: tuple[Executor, dict[str, zmq.Socket[bytes]]],
) -> None:
    ex, _ = executor
    for slot in ex.pool.slots.values():
        slot.budget = 40  # descriptors: room for small tasks only (8 sockets: 24)
    huge = start("huge", sockets=100)
    answer = ex.on_start_tasks(batch(start("t0"), huge, start("t1")))
    small, refused, other = answer["results"]
    assert "worker" in small and "worker" in other
    assert "file descriptors" in refused["error"]
    assert set(ex.tasks) == {("job", "t0"), ("job", "t1")}
