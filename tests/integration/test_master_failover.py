"""Two masters: the standby takes over when the leader is killed; running tasks keep running."""

from __future__ import annotations

import time

import pytest

import zdf
from zdf import protocol as P
from zdf.errors import NotLeader, ZdfError
from zdf.jobs import examples
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.localcluster import LocalCluster, wait_until
from zdf.wire import RpcClient

pytestmark = [pytest.mark.timeout(90), pytest.mark.cluster(masters=2)]


def counter_job(target: int) -> dict:
    task = TaskSpec(
        "count", "counter", "zdf.jobs.counter:Counter", {"target": target, "every": 0.01}
    )
    return JobSpec("count", "custom", [task]).to_dict()


def test_standby_refuses_with_a_hint(cluster: LocalCluster) -> None:
    leader = wait_until(cluster.leader, 10, "a leader")
    standby = next(m for m in cluster.masters if m is not leader)
    with RpcClient(standby.addr, timeout=1.0) as client:
        with pytest.raises(NotLeader) as info:
            client.call(P.JOB_LIST, retry=False)
        assert info.value.data["leader"] == leader.addr
    with RpcClient(standby.addr, timeout=1.0) as client:
        assert client.call(P.CLUSTER_STATUS)["role"] == "standby"
    with RpcClient([standby.addr, leader.addr], timeout=5.0) as client:
        assert client.call(P.JOB_LIST) == [], "the client follows the hint to the leader"


def test_leader_kill_standby_takes_over_and_tasks_keep_running(cluster: LocalCluster) -> None:
    leader = wait_until(cluster.leader, 10, "a leader")
    job_id = cluster.client().call(P.SUBMIT_JOB, {"spec": counter_job(400)})["job_id"]

    def running() -> dict | None:
        job = cluster.client().call(P.JOB_STATUS, {"job_id": job_id})
        return job if job["tasks"][0]["state"] == "running" else None

    before = wait_until(running, 10, "the task to run")["tasks"][0]
    killed_at = time.monotonic()
    cluster.kill(leader)
    new_leader = wait_until(cluster.leader, 5, "a new leader")
    took_over = time.monotonic() - killed_at
    assert new_leader is not leader
    assert took_over < 2.0, f"standby serving {took_over:.2f}s after the kill"

    def executors_back() -> bool:
        rows = cluster.client().call(P.EXECUTOR_LIST)
        return sorted(r["id"] for r in rows if r["state"] == "alive") == ["exec-1", "exec-2"]

    wait_until(executors_back, 5, "executors to register with the new leader")
    job = wait_until(
        lambda: (
            (j := cluster.client().call(P.JOB_STATUS, {"job_id": job_id}))["state"]
            in ("finished", "failed")
            and j
        ),
        30,
        "the job to end",
    )
    assert job["state"] == "finished", job.get("error")
    task = job["tasks"][0]
    assert task["attempt"] == before["attempt"], "the running task was not restarted"
    assert task["executor"] == before["executor"], (before, task)
    assert task["info"]["count"] == 400


def test_function_tasks_in_flight_survive_a_master_kill(cluster: LocalCluster) -> None:
    leader = wait_until(cluster.leader, 10, "a leader")
    with zdf.connect(cluster.master_addr, timeout=10.0) as client:
        assert client.submit(examples.square, 3).result(10) == 9
        # More tasks than workers, each a while: some queued on the master, some running.
        futures = [client.submit(examples.hold, 0.05 * (i % 4)) for i in range(40)]
        futures += [client.submit(examples.square, i) for i in range(40)]
        wait_until(lambda: any(f.done() for f in futures), 10, "the first answers")
        cluster.kill(leader)
        values = [f.result(30) for f in futures]
        assert values == [0.05 * (i % 4) for i in range(40)] + [i * i for i in range(40)]
        assert client.failovers >= 1, "the client submitted its unanswered tasks again"
        assert client.pending == 0
        assert client.submit(examples.square, 7).result(10) == 49, "new tasks go to the new leader"


def test_function_tasks_fail_when_no_master_is_left(cluster: LocalCluster) -> None:
    wait_until(cluster.leader, 10, "a leader")
    with zdf.connect(cluster.master_addr, timeout=2.0) as client:
        future = client.submit(examples.hold, 60)
        for master in cluster.masters:
            cluster.kill(master)
        started = time.monotonic()
        with pytest.raises(ZdfError, match="master went away"):
            future.result(30)
        assert time.monotonic() - started < 15, "a bounded wait, not a hang"
