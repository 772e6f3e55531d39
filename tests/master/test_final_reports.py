"""A task's final report is acknowledged only once the master has written it: acknowledged
from memory, a master killed before its next write forgot a finished task, and the
executor never sent the report again (a job that had finished ran again, and hung)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from zdf import protocol as P
from zdf.config import MasterConfig
from zdf.errors import ZdfError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.master.server import ExecutorInfo, Master
from zdf.master.writebatch import FencedBatch
from zdf.metastore.commands import TxnOp
from zdf.wire.batchcall import BatchedCall
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(30)

PEER = b"exec-1-peer"


class Setup:
    def __init__(self) -> None:
        config = MasterConfig(
            master_addr=f"127.0.0.1:{free_port()}", heartbeat_addr=f"127.0.0.1:{free_port()}"
        )
        self.master = Master(config, None)
        self.written: list[list[bytes]] = []
        self.fail = False
        self.master.batch = FencedBatch(self.master.reactor, self.apply, lambda why: None)
        self.master.executors["exec-1"] = ExecutorInfo("exec-1", "127.0.0.1:1", 4, "h", 1, PEER)
        self.master._by_peer[PEER] = "exec-1"
        tasks = [TaskSpec(f"t{i}", "op", "m:Op", {}) for i in range(2)]
        self.job = self.master.jobs.submit(JobSpec("j", "custom", tasks))
        self.master.jobs.place_pending({"exec-1": 4})

    def apply(self, ops: Sequence[TxnOp]) -> None:
        if self.fail:
            raise ZdfError("the metastore is away")
        self.written.append([op.key for op in ops])  # type: ignore[attr-defined]

    def report(self, task: str, state: str) -> list[tuple[bool, Any]]:
        answers: list[tuple[bool, Any]] = []
        body = {"job_id": self.job.job_id, "task_id": task, "attempt": 1, "state": state}
        call = BatchedCall(self.master.channel, PEER, P.TASK_STATE, 0, body)
        call.answer = lambda ok, value: answers.append((ok, value))
        self.master.channel.serve(call)
        return answers

    def turn(self) -> None:
        self.master.reactor.run_once(0.01)


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    try:
        yield s
    finally:
        s.master.close()


def test_a_final_report_is_acknowledged_once_written(setup: Setup) -> None:
    assert setup.report("t0", "running") == [(True, None)]  # at once: nothing to keep
    answers = setup.report("t0", "finished")
    assert answers == []  # not yet: its state is not durable
    setup.turn()
    assert answers == [(True, None)]
    assert any(key.endswith(b"/t0") for keys in setup.written for key in keys)


def test_a_final_report_not_written_is_refused_for_a_retry(setup: Setup) -> None:
    setup.fail = True
    answers = setup.report("t1", "finished")
    setup.turn()
    [(ok, error)] = answers
    assert not ok and error["data"].get("retry") is True  # the executor keeps it
    assert "t1" in setup.master.jobs.dirty_tasks[setup.job.job_id]  # written later anyway
