"""Fault tests: the benchmark job on a real local cluster, something killed mid-job,
and ``verify-sink`` must still pass (every pk and DDL exactly once, in order, barrier
respected), within a recovery time bound.

Short versions run in CI; ``@pytest.mark.slow`` ones (``make fault``) repeat them
over several seeds. Kill moments are drawn from a seeded RNG as a fraction of the
records written, so a failing seed can be replayed.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from zdf.jobs.benchrun import assert_exact, start_bench
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)

MOVE_BOUND = 3.0
"""DESIGN.md: a dead executor's tasks run elsewhere within 3 s of its death."""

RECOVERY_BOUND = 3.0
"""Kill to the sinks writing at 90 % of their normal rate (the goal is 1 s; CI is noisy)."""


def kill_executor_mid_job(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(rng.uniform(0.1, 0.7))
    victim = run.busiest_executor()
    killed_at = run.kill(victim)
    moved_at = run.wait_moved(victim.extra["id"])
    assert moved_at - killed_at < MOVE_BOUND
    job = run.wait_end()
    assert_exact(run, job)
    recovery = run.recovery()
    assert recovery.recovered_s is not None and recovery.recovered_s < RECOVERY_BOUND, recovery
    attempts = {t["id"]: t["attempt"] for t in job["tasks"]}
    assert max(attempts.values()) >= 2, "some task restarted"


def test_executor_sigkill_mid_job(cluster: LocalCluster, tmp_path: Path) -> None:
    kill_executor_mid_job(cluster, tmp_path, seed=1)


@pytest.mark.cluster(executors=2)
def test_executor_sigstop_zombie_is_fenced(cluster: LocalCluster, tmp_path: Path) -> None:
    """A hung executor's workers keep running: its sinks must not corrupt the files."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    victim = run.busiest_executor()
    run.kill(victim, signal.SIGSTOP)
    try:
        wait_until(
            lambda: cluster.executor_state(victim.extra["id"]) == "dead", 5, "the hung one dead"
        )
        run.wait_moved(victim.extra["id"])
    finally:
        run.cluster.kill(victim, signal.SIGCONT)
    job = run.wait_end()
    assert_exact(run, job)
    wait_until(lambda: cluster.executor_state(victim.extra["id"]) == "alive", 10, "it to rejoin")


def test_executor_hung_for_good_does_not_block_the_job(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """An executor that stays stopped: its workers stop themselves after the keepalive
    TTL (no zombie sink keeps its file), and the job finishes exactly without it."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    victim = run.busiest_executor()
    run.kill(victim, signal.SIGSTOP)
    try:
        assert_exact(run, run.wait_end())
    finally:
        run.cluster.kill(victim, signal.SIGCONT)


@pytest.mark.cluster(executors=3)
def test_two_executors_lost_one_after_the_other(cluster: LocalCluster, tmp_path: Path) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"))
    for fraction in (0.25, 0.55):
        run.wait_sunk(fraction)
        victim = run.busiest_executor()
        killed_at = run.kill(victim)
        assert run.wait_moved(victim.extra["id"]) - killed_at < MOVE_BOUND
    assert_exact(run, run.wait_end())


@pytest.mark.cluster(masters=2)
def test_master_sigkill_with_a_standby(cluster: LocalCluster, tmp_path: Path) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    leader = wait_until(cluster.leader, 10, "a leader")
    killed_at = run.kill(leader)
    wait_until(lambda: (m := cluster.leader()) is not None and m is not leader, 5, "a new leader")
    assert time.monotonic() - killed_at < 2.0, "the standby serves within 2 s"
    assert_exact(run, run.wait_end())


@pytest.mark.cluster(metastores=3)
def test_metastore_leader_sigkill_mid_job(cluster: LocalCluster, tmp_path: Path) -> None:
    """Checkpoints and placements go through the metastore; a new leader takes over."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    leader = wait_until(cluster.metastore_leader, 10, "a metastore leader")
    run.kill(leader)
    wait_until(
        lambda: (m := cluster.metastore_leader()) is not None and m is not leader,
        10,
        "a new metastore leader",
    )
    assert_exact(run, run.wait_end())


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_executor_sigkill_many_seeds(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    kill_executor_mid_job(cluster, tmp_path, seed=100 + seed)


@pytest.mark.slow
@pytest.mark.cluster(masters=2)
@pytest.mark.parametrize("fraction", [0.6, 0.9, 0.99])
def test_master_sigkill_late_in_the_job(
    cluster: LocalCluster, tmp_path: Path, fraction: float
) -> None:
    """Near the end tasks finish and raise done flags while the master is away."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(fraction)
    leader = wait_until(cluster.leader, 10, "a leader")
    run.kill(leader)
    assert_exact(run, run.wait_end())


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.6, 0.9, 0.99])
def test_executor_sigkill_late_in_the_job(
    cluster: LocalCluster, tmp_path: Path, fraction: float
) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(fraction)
    run.kill(run.busiest_executor())
    assert_exact(run, run.wait_end())
