"""Fault tests: the benchmark job on a real local cluster, something killed mid-job,
and ``verify-sink`` must still pass (every pk and DDL exactly once, in order, barrier
respected), within a recovery time bound.

Short versions run in CI; ``@pytest.mark.slow`` ones (``make fault``) repeat them
over several seeds. Kill moments are drawn from a seeded RNG as a fraction of the
records written, so a failing seed can be replayed.

The bounds below are the design's figures with room for a loaded 2-core CI
machine; each is still well under what a broken detection path would take (the
original prototype needed 13-14 s to notice a dead executor).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from zdf.jobs.benchrun import BenchRun, assert_exact, start_bench
from zdf.localcluster import Child, LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)

MOVE_BOUND = 3.0
"""DESIGN.md: a dead executor's tasks run elsewhere within 3 s of its death."""

RECOVERY_BOUND = 3.0
"""Kill to the sinks writing at 90 % of their normal rate (the goal is 1 s; CI is noisy)."""

HUNG_DEAD_BOUND = 1.5
"""SIGSTOP to the master reporting the executor dead (keepalive TTL 1 s in LocalCluster)."""

HUNG_MOVE_BOUND = 2.0
"""SIGSTOP to every task of the hung executor running elsewhere (or finished)."""

STANDBY_BOUND = 2.0
"""Master SIGKILL to the standby serving as the leader."""

METASTORE_STALL_BOUND = 2.0
"""Metastore leader SIGKILL: the longest gap between two sink writes after it."""

PENDING_MASTER_CPU = 25.0
"""Percent of one core the master may use while tasks wait for capacity (a busy
loop would use about 100)."""


def task_attempts(job: dict[str, Any]) -> dict[str, int]:
    return {t["id"]: t["attempt"] for t in job["tasks"]}


@contextmanager
def stopped(run: BenchRun, children: list[Child], pids: tuple[int, ...] = ()) -> Iterator[float]:
    """SIGSTOP ``children`` (and bare ``pids``); always SIGCONT them on the way out.

    Yields the monotonic time of the stop."""
    at = time.monotonic()
    run.faults_ns.append(time.time_ns())
    try:
        for child in children:
            run.cluster.kill(child, signal.SIGSTOP)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield at
    finally:
        for child in children:
            run.cluster.kill(child, signal.SIGCONT)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def executors_alive(cluster: LocalCluster, ids: list[str]) -> bool:
    return all(cluster.executor_state(e) == "alive" for e in ids)


# -- executor SIGKILL ---------------------------------------------------------------


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
    assert max(task_attempts(job).values()) >= 2, "some task restarted"


def test_executor_sigkill_mid_job(cluster: LocalCluster, tmp_path: Path) -> None:
    kill_executor_mid_job(cluster, tmp_path, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_executor_sigkill_many_seeds(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    kill_executor_mid_job(cluster, tmp_path, seed=100 + seed)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.6, 0.9, 0.99])
def test_executor_sigkill_late_in_the_job(
    cluster: LocalCluster, tmp_path: Path, fraction: float
) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(fraction)
    victim = run.busiest_executor()
    killed_at = run.kill(victim)
    moved_s = run.wait_moved(victim.extra["id"]) - killed_at
    print(f"kill at {fraction:.0%}: tasks moved after {moved_s:.2f}s")
    assert moved_s < MOVE_BOUND, f"tasks moved {moved_s:.2f}s after the kill"
    assert_exact(run, run.wait_end())


# -- executor SIGSTOP, then SIGCONT ---------------------------------------------------


def stop_executor_mid_job(
    cluster: LocalCluster, tmp_path: Path, seed: int, *, with_workers: bool = False
) -> None:
    """Stop the busiest executor until its tasks moved, then let it run again.

    It stays stopped until its workers exit on their own (``frozen-limit``, the
    keepalive TTL); woken, it reports their attempts failed: stale reports the
    master must ignore.
    ``with_workers`` stops its workers too (a paused VM): they wake up still running
    the old attempts, which the master must cancel when the executor registers."""
    rng = random.Random(seed)
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(rng.uniform(0.1, 0.6))
    victim = run.busiest_executor()
    victim_id = victim.extra["id"]
    before = task_attempts(run.status())
    on_victim = {t["id"] for t in run.status()["tasks"] if t["executor"] == victim_id}
    workers = psutil.Process(victim.pid).children()
    paused = tuple(w.pid for w in workers) if with_workers else ()
    with stopped(run, [victim], paused) as stopped_at:
        wait_until(
            lambda: cluster.executor_state(victim_id) == "dead",
            HUNG_DEAD_BOUND + 5,
            "the hung executor reported dead",
            interval=0.02,
        )
        dead_s = time.monotonic() - stopped_at
        moved_s = run.wait_moved(victim_id) - stopped_at
        if not with_workers:
            wait_until(
                lambda: not any(running(w) for w in workers), 10, "its workers to quit on their own"
            )
    print(f"stop: dead after {dead_s:.2f}s, tasks moved after {moved_s:.2f}s")
    assert dead_s < HUNG_DEAD_BOUND, f"reported dead {dead_s:.2f}s after the stop"
    assert moved_s < HUNG_MOVE_BOUND, f"tasks running elsewhere {moved_s:.2f}s after the stop"
    wait_until(lambda: cluster.executor_state(victim_id) == "alive", 10, "it to rejoin")
    job = run.wait_end()
    assert_exact(run, job)
    # Fenced: nothing the zombie said about its old attempts counted. A stale
    # "failed" would have raised a task's failures and started attempt 3.
    after = {t["id"]: t for t in job["tasks"]}
    for task_id, task in after.items():
        assert task["failures"] == 0, task
        moved = task_id in on_victim and task["attempt"] > before[task_id]
        assert task["attempt"] == before[task_id] + (1 if moved else 0), (before, task)
        if moved:
            assert task["executor"] != victim_id, task
    assert executors_alive(cluster, [c.extra["id"] for c in cluster.executors])
    # Which zombie this was: workers that quit on their own, or ones that woke up
    # with the old attempts and had them canceled by the master.
    survived = [running(w) for w in workers]
    assert survived == [with_workers] * len(workers), survived


@pytest.mark.cluster(executors=2)
def test_executor_sigstop_zombie_is_fenced(cluster: LocalCluster, tmp_path: Path) -> None:
    """A hung executor's tasks move within the bound; its stale reports are ignored."""
    stop_executor_mid_job(cluster, tmp_path, seed=2)


@pytest.mark.cluster(executors=2)
def test_paused_executor_and_workers_zombie_is_fenced(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The executor and its workers stopped together wake up running the old attempts:
    their sinks must not corrupt the files, their reports must not count. A zombie
    sink holds its file's lock, so the new attempt can only finish once the master
    has had the old one canceled."""
    stop_executor_mid_job(cluster, tmp_path, seed=3, with_workers=True)


@pytest.mark.slow
@pytest.mark.cluster(executors=2)
@pytest.mark.parametrize("seed", range(4))
def test_executor_sigstop_many_seeds(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    stop_executor_mid_job(cluster, tmp_path, seed=200 + seed)


@pytest.mark.slow
@pytest.mark.cluster(executors=2)
@pytest.mark.parametrize("seed", range(3))
def test_paused_executor_and_workers_many_seeds(
    cluster: LocalCluster, tmp_path: Path, seed: int
) -> None:
    stop_executor_mid_job(cluster, tmp_path, seed=300 + seed, with_workers=True)


def test_executor_hung_for_good_does_not_block_the_job(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """An executor that stays stopped: its workers stop themselves after the keepalive
    TTL (no zombie sink keeps its file), and the job finishes exactly without it."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    victim = run.busiest_executor()
    with stopped(run, [victim]) as stopped_at:
        moved_s = run.wait_moved(victim.extra["id"]) - stopped_at
        assert moved_s < HUNG_MOVE_BOUND, f"tasks running elsewhere {moved_s:.2f}s after the stop"
        assert_exact(run, run.wait_end())


# -- two executors lost ---------------------------------------------------------------


def lose_two_executors(run: BenchRun, fractions: tuple[float, float]) -> None:
    for fraction in fractions:
        run.wait_sunk(fraction)
        victim = run.busiest_executor()
        killed_at = run.kill(victim)
        moved_s = run.wait_moved(victim.extra["id"]) - killed_at
        print(f"kill at {fraction:.0%}: tasks moved after {moved_s:.2f}s")
        assert moved_s < MOVE_BOUND, f"tasks of {victim.extra['id']} moved in {moved_s:.2f}s"
    assert_exact(run, run.wait_end())


@pytest.mark.cluster(executors=3)
def test_two_executors_lost_one_after_the_other(cluster: LocalCluster, tmp_path: Path) -> None:
    lose_two_executors(start_bench(cluster, str(tmp_path / "sink")), (0.25, 0.55))


@pytest.mark.slow
@pytest.mark.cluster(executors=3)
@pytest.mark.parametrize("seed", range(4))
def test_two_executors_lost_many_seeds(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    rng = random.Random(400 + seed)
    first = rng.uniform(0.1, 0.45)
    second = rng.uniform(first + 0.1, 0.75)
    lose_two_executors(start_bench(cluster, str(tmp_path / "sink")), (first, second))


# -- capacity short -------------------------------------------------------------------


@pytest.mark.cluster(executors=2, slots=1)
def test_capacity_short_tasks_wait_pending_until_an_executor_joins(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """13 tasks in 2 slots (one per stream) on 2 x 1 slot; one executor dies: the slot
    that does not fit waits as Pending (no crash, no busy loop, its reason said) and
    starts when a new executor joins."""
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.2)
    victim = run.busiest_executor()
    run.kill(victim)

    def pending() -> list[str]:
        return [t["id"] for t in run.status()["tasks"] if t["state"] == "pending"]

    waiting = wait_until(pending, MOVE_BOUND + 2, "tasks to wait as Pending")
    master = psutil.Process(cluster.masters[0].pid)
    master.cpu_percent(None)
    cpu = master.cpu_percent(1.0)  # a measurement over 1 s, not a synchronisation
    print(f"{len(waiting)} tasks pending; master at {cpu:.1f}% of a core")
    assert cpu < PENDING_MASTER_CPU, f"master at {cpu:.0f}% of a core while tasks wait"
    still = pending()
    assert still and set(still) <= set(waiting), (waiting, still)
    status = run.status()
    assert status["state"] == "running"
    assert status["reason"] == "needs 1 slot, 0 free on 1 executor"
    assert all(c.alive() for c in cluster.masters)

    joined = cluster.start_executor()
    cluster.wait_ready(10)
    job = run.wait_end()
    assert_exact(run, job)
    placed = {t["id"]: t["executor"] for t in job["tasks"]}
    assert {placed[t] for t in waiting} == {joined.extra["id"]}, (waiting, placed)


# -- master and metastore -------------------------------------------------------------


@pytest.mark.cluster(masters=2)
def test_master_sigkill_with_a_standby(cluster: LocalCluster, tmp_path: Path) -> None:
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(0.3)
    leader = wait_until(cluster.leader, 10, "a leader")
    killed_at = run.kill(leader)
    wait_until(lambda: (m := cluster.leader()) is not None and m is not leader, 5, "a new leader")
    assert time.monotonic() - killed_at < STANDBY_BOUND, "the standby serves within 2 s"
    assert_exact(run, run.wait_end())


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
    killed_at = run.kill(leader)
    wait_until(lambda: (m := cluster.leader()) is not None and m is not leader, 5, "a new leader")
    took_over = time.monotonic() - killed_at
    print(f"master killed at {fraction:.0%}: standby serving after {took_over:.2f}s")
    assert took_over < STANDBY_BOUND, f"the standby served {took_over:.2f}s after the kill"
    assert_exact(run, run.wait_end())


def kill_metastore_leader_mid_job(cluster: LocalCluster, tmp_path: Path, seed: int) -> None:
    """Checkpoints and placements go through the metastore; a new leader takes over
    without the job noticing: no task restarted, no executor lost, no long stall."""
    rng = random.Random(seed)
    run = start_bench(cluster, str(tmp_path / "sink"))
    run.wait_sunk(rng.uniform(0.2, 0.6))
    executors = [c.extra["id"] for c in cluster.executors]
    attempts = task_attempts(run.status())
    leader = wait_until(cluster.metastore_leader, 10, "a metastore leader")
    run.kill(leader)
    wait_until(
        lambda: (m := cluster.metastore_leader()) is not None and m is not leader,
        10,
        "a new metastore leader",
    )
    assert executors_alive(cluster, executors)
    job = run.wait_end()
    assert_exact(run, job)
    assert task_attempts(job) == attempts, "no task restarted"
    assert all(t["failures"] == 0 for t in job["tasks"]), job["tasks"]
    assert executors_alive(cluster, executors)
    stall = run.recovery().stalled_s
    print(f"metastore leader killed: longest sink stall {stall:.2f}s")
    assert stall < METASTORE_STALL_BOUND, f"the sinks stalled {stall:.2f}s"


@pytest.mark.cluster(metastores=3)
def test_metastore_leader_sigkill_mid_job(cluster: LocalCluster, tmp_path: Path) -> None:
    kill_metastore_leader_mid_job(cluster, tmp_path, seed=5)


@pytest.mark.slow
@pytest.mark.cluster(metastores=3)
@pytest.mark.parametrize("seed", range(4))
def test_metastore_leader_sigkill_many_seeds(
    cluster: LocalCluster, tmp_path: Path, seed: int
) -> None:
    kill_metastore_leader_mid_job(cluster, tmp_path, seed=500 + seed)
