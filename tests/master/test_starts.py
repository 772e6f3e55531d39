"""The master's start commands (``zdf.master.starts``): one message per executor per
round, each job's endpoints once; a message not sent goes again with the starts that
still stand; a refusal fails the tasks it names (or all of them, when whole)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from zdf import protocol as P
from zdf.errors import StaleEpoch, Timeout, ZdfError
from zdf.jobs.spec import TaskSpec
from zdf.master import starts as starts_module
from zdf.master.jobs import Dispatch
from zdf.master.starts import StartSender
from zdf.wire.reactor import Reactor

pytestmark = pytest.mark.timeout(30)


class FakeChannel:
    """Records requests; answers each with what ``answer`` gives for it."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any], Any]] = []
        self.stats: Counter[str] = Counter()

    def request(self, op: str, body: Any, *, peer: bytes, timeout: float, callback: Any) -> int:
        assert op == P.START_TASKS
        self.sent.append((peer, body, callback))
        return len(self.sent)


def dispatch(executor: str, task: str, attempt: int = 1, job: str = "j") -> Dispatch:
    return Dispatch(executor, job, TaskSpec(task, "op", "m:Op", {}), attempt)


class Setup:
    def __init__(self, reactor: Reactor) -> None:
        self.channel = FakeChannel()
        self.refused: list[tuple[str, str]] = []
        self.standing: set[str] = set()
        self.sender = StartSender(
            reactor,
            self.channel,  # type: ignore[arg-type]
            peer_of=lambda e: e.encode(),
            epoch=lambda: 42,
            endpoints_of=lambda job: [[f"{job}-src", "out", "ipc:///a"]],
            checkpoint_of=lambda job, task: b"state" if task == "t0" else None,
            standing=lambda d: d.spec.task_id in self.standing,
            refused=lambda d, error: self.refused.append((d.spec.task_id, str(error))),
            timeout=5.0,
        )


def test_a_round_is_one_message_per_executor(reactor: Reactor) -> None:
    s = Setup(reactor)
    round_ = [dispatch("e1", f"t{i}", job=f"j{i % 2}") for i in range(5)]
    s.sender.send([*round_, dispatch("e2", "x")])
    assert [peer for peer, _, _ in s.channel.sent] == [b"e1", b"e2"]
    body = s.channel.sent[0][1]
    assert body["epoch"] == 42
    assert [st["task"]["task_id"] for st in body["starts"]] == [f"t{i}" for i in range(5)]
    assert body["endpoints"] == {j: [[f"{j}-src", "out", "ipc:///a"]] for j in ("j0", "j1")}
    assert body["starts"][0]["checkpoint"] == b"state"


def test_a_big_round_is_split_into_bounded_messages_one_a_turn(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(starts_module, "MAX_STARTS", 4)
    s = Setup(reactor)
    s.standing = {f"t{i}" for i in range(10)} - {"t9"}  # t9 moved before its turn came
    s.sender.send([*(dispatch("e1", f"t{i}") for i in range(10)), dispatch("e2", "x")])
    assert [len(body["starts"]) for _, body, _ in s.channel.sent] == [4, 1]  # e1's first, e2's
    reactor.run(until=lambda: len(s.channel.sent) == 4, deadline=time.monotonic() + 5)
    assert [len(body["starts"]) for _, body, _ in s.channel.sent] == [4, 1, 4, 1]


def test_starts_not_sent_go_again_if_they_still_stand(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.sender.send([dispatch("e1", f"t{i}") for i in range(3)])
    s.standing = {"t0", "t2"}  # t1 was moved meanwhile
    callback = s.channel.sent[0][2]
    callback(None, ZdfError("could not send", unsent=True))
    deadline = time.monotonic() + 5
    reactor.run(until=lambda: len(s.channel.sent) == 2, deadline=deadline)
    resent = s.channel.sent[1][1]
    assert [st["task"]["task_id"] for st in resent["starts"]] == ["t0", "t2"]
    assert s.channel.stats["start_resent"] == 2 and s.refused == []


def test_per_start_refusals_fail_only_those_tasks(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.sender.send([dispatch("e1", f"t{i}") for i in range(3)])
    results = [{"worker": "w0"}, {"error": "no room"}, {"worker": None, "queued": True}]
    s.channel.sent[0][2]({"results": results}, None)
    assert s.refused == [("t1", "no room")]


def test_a_whole_refusal_fails_every_task_and_a_timeout_none(reactor: Reactor) -> None:
    s = Setup(reactor)
    s.sender.send([dispatch("e1", "t0"), dispatch("e1", "t1")])
    s.sender.send([dispatch("e1", "t2")])
    s.channel.sent[0][2](None, StaleEpoch("another epoch"))
    s.channel.sent[1][2](None, Timeout("no answer"))  # liveness decides that one
    assert [task for task, _ in s.refused] == ["t0", "t1"]
