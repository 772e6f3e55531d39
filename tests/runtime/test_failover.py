"""Failover in-process: tasks of the bench job die (or turn zombie) at random moments
and start again from their checkpoints; the output must still be exact.

``LocalRunner.restart`` plays an executor's death: a random part of the unfinished
tasks (a mix of producers, binlogs, receives, syncers, sinks and maybe the
coordinator, as on a killed executor) stops and starts again with attempt + 1.
"""

from __future__ import annotations

import time

import pytest

from zdf.cli.verify_sink import verify
from zdf.jobs.bench import BenchConfig
from zdf.runtime.local import LocalRunner
from zdf.runtime.operator import DONE

from .conftest import JobFactory
from .helpers import run_with_failures

pytestmark = pytest.mark.timeout(120)

KEYS = {"rcd-cnt": 6000, "ddl-freq": 300, "batch-size": 200, "rate": 15000, "table-num": 3}


def check(config: BenchConfig) -> None:
    report = verify(config)
    assert report.ok, (report.counts, report.violations)
    assert report.records == config.table_num * config.rcd_cnt


@pytest.mark.parametrize("seed", range(6))
def test_random_task_deaths_keep_the_output_exact(small_job: JobFactory, seed: int) -> None:
    job, config = small_job(**KEYS)
    runner = run_with_failures(job, seed, failures=3, gap=0.15)
    check(config)
    assert max(runner.attempts.values()) >= 1


@pytest.mark.parametrize("seed", range(3))
def test_zombies_are_fenced(small_job: JobFactory, seed: int) -> None:
    job, config = small_job(**KEYS)
    run_with_failures(job, 100 + seed, failures=2, zombies=True, gap=0.225)
    check(config)


def test_every_sink_dies_right_after_starting(small_job: JobFactory) -> None:
    job, config = small_job(**KEYS)
    with LocalRunner(job) as runner:
        runner.start()
        runner.reactor.run(until=lambda: False, deadline=time.monotonic() + 0.1)
        runner.restart(["sink-0", "sink-1", "coordinator"])
        runner.run(timeout=60)
    check(config)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_task_deaths_many_seeds(small_job: JobFactory, seed: int) -> None:
    job, config = small_job(**{**KEYS, "servers": 3})
    run_with_failures(job, 1000 + seed, failures=4, zombies=seed % 2 == 1, gap=0.1125)
    check(config)


@pytest.mark.parametrize("late", ["sink-0", "sink-1"])
def test_a_sink_restarted_after_its_peer_is_done(small_job: JobFactory, late: str) -> None:
    """The restarted sink learns at once, while it is still starting, that a peer is
    done; what that teaches its barrier must wait until it has started."""
    job, config = small_job(**KEYS)
    peer = "sink-1" if late == "sink-0" else "sink-0"
    with LocalRunner(job) as runner:
        runner.start()
        runner.reactor.run(
            until=lambda: (peer, DONE) in runner.directory.addresses or bool(runner.failed),
            deadline=time.monotonic() + 30,
        )
        assert (peer, DONE) in runner.directory.addresses, "the peer sink never got done"
        runner.restart([late])
        runner.run(timeout=60)
    check(config)
