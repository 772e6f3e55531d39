"""A restarted binlog merges again from its last mark, not from round 0 (binlog.py).

Marks are (round, gtid) cuts saved every ``checkpoint-interval``; the restarted
binlog waits for its receive to name a gtid and merges from the latest mark at
or before it. The output must stay exact whichever mark it picks.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from zdf.cli.verify_sink import verify
from zdf.runtime.bench.binlog import Binlog, marks_of
from zdf.runtime.local import LocalRunner
from zdf.runtime.stream import StreamOperator

from .conftest import JobFactory

pytestmark = pytest.mark.timeout(120)

# Paced (about 0.6 s) so that several marks are saved before the restart.
KEYS: dict[str, Any] = {
    "rcd-cnt": 9000,
    "ddl-freq": 300,
    "batch-size": 300,
    "rate": 15000,
    "table-num": 3,
    "checkpoint-interval": "50ms",
}


def wait_for(runner: LocalRunner, condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    runner.reactor.run(until=lambda: condition() or bool(runner.failed), deadline=deadline)
    assert not runner.failed, runner.failed
    assert condition(), "condition not reached in time"


def marks(runner: LocalRunner, task: str) -> list[tuple[int, int]]:
    return marks_of(runner.checkpoints.get(task, {}).get("marks"))


def binlog(runner: LocalRunner, task: str) -> Binlog:
    operator = runner.handles[task].operator
    assert isinstance(operator, Binlog)
    return operator


def check_exact(runner: LocalRunner, config: Any) -> None:
    runner.run(timeout=60)
    report = verify(config)
    assert report.ok, (report.counts, report.violations)
    assert report.records == config.table_num * config.rcd_cnt


def test_a_restarted_binlog_merges_from_its_last_mark(classic_job: JobFactory) -> None:
    job, config = classic_job(**KEYS)
    with LocalRunner(job) as runner:
        runner.start()
        wait_for(runner, lambda: len(marks(runner, "binlog-0")) >= 3)
        saved = marks(runner, "binlog-0")
        receive = runner.handles["receive-0"].operator
        assert isinstance(receive, StreamOperator)
        asked = receive.inp.pos  # the gtid the receive resubscribes from
        runner.restart(["binlog-0"])
        check_exact(runner, config)
        # The latest mark at or before that gtid (the binlog runs ahead of its
        # receive by up to max-backlog rows), and not round 0.
        expected = max(r for r, g in saved if g <= asked)
        assert runner.finished["binlog-0"]["merged_from"] == [expected], (asked, saved)
        assert expected > 0


def test_the_whole_stream_restarted_at_once_stays_exact(classic_job: JobFactory) -> None:
    job, config = classic_job(**KEYS)
    with LocalRunner(job) as runner:
        runner.start()
        wait_for(runner, lambda: len(marks(runner, "binlog-1")) >= 2)
        runner.restart(["binlog-1", "receive-1", "syncer-1", "sink-1"])
        check_exact(runner, config)
        merged_from = runner.finished["binlog-1"]["merged_from"]
        assert len(merged_from) == 1
        # The sink resumes from its file, which may be behind the newest mark.
        assert merged_from[0] <= marks(runner, "binlog-1")[-1][0]


def test_a_subscription_below_what_it_holds_merges_again_from_earlier(
    classic_job: JobFactory,
) -> None:
    job, config = classic_job(**KEYS)
    with LocalRunner(job) as runner:
        runner.start()
        wait_for(runner, lambda: len(marks(runner, "binlog-0")) >= 2)
        runner.restart(["binlog-0"])
        wait_for(runner, lambda: bool(binlog(runner, "binlog-0").rebuilt_from))
        first = binlog(runner, "binlog-0").rebuilt_from[0]
        assert first > 0
        # A receive asking for gtid 0 (what no live receive does: a safety net) makes
        # the binlog merge again from round 0; the live receive then resubscribes
        # from where it is and the output is still exact.
        binlog(runner, "binlog-0")._on_subscribe(0, 0)
        check_exact(runner, config)
        assert runner.finished["binlog-0"]["merged_from"][:2] == [first, 0]


def test_a_fresh_binlog_merges_from_round_0_and_saves_marks(classic_job: JobFactory) -> None:
    job, config = classic_job(**KEYS)
    with LocalRunner(job) as runner:
        check_exact(runner, config)
        assert runner.finished["binlog-0"]["merged_from"] == [0]
        saved = marks(runner, "binlog-0")
        assert len(saved) >= 2
        rounds = [r for r, _ in saved]
        gtids = [g for _, g in saved]
        assert rounds == sorted(set(rounds)) and gtids == sorted(gtids)
        assert gtids[-1] <= runner.finished["binlog-0"]["records"]


@pytest.mark.parametrize(
    "raw",
    [None, "x", [[1]], [[1, 2, 3]], [[0, 5]], [[2, 5], [1, 9]], [[1, 9], [2, 5]], [[1, True]]],
)
def test_malformed_marks_are_ignored(raw: object) -> None:
    assert marks_of(raw) == []


def test_marks_round_trip() -> None:
    assert marks_of([[1, 10], [3, 10], [4, 25]]) == [(1, 10), (3, 10), (4, 25)]
