"""A secured cluster against hostile peers: each attack of issue 15 from a socket without
keys and from one holding the wrong role's keys. Each must be refused, and the cluster
must go on serving with exact output.

The short form (one cluster, the attacks that need no waiting) runs in ``make test``;
``make fault`` adds the rest (``slow``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq

import zdf
from zdf import protocol as P
from zdf.errors import JobError, LimitExceeded, PermissionDenied, ProtocolError
from zdf.jobs import examples
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster, wait_until
from zdf.metastore.client import MetaClient
from zdf.metastore.commands import Delete
from zdf.metastore.raft.messages import Vote
from zdf.metastore.raft.transport import frame
from zdf.wire import RpcClient, security
from zdf.wire.codec import Kind, encode
from zdf.wire.payload import pack
from zdf.wire.sockets import context, make_socket

pytestmark = pytest.mark.timeout(120)

NOTHING_THROUGH_MS = 700  # a CURVE handshake on loopback takes about a millisecond


@contextmanager
def role(cluster: LocalCluster, name: str) -> Iterator[None]:
    """This process speaks as ``name`` (a peer holding that role's keys) meanwhile."""
    security.install(security.load(cluster.security_dir, name))
    try:
        yield
    finally:
        security.install(security.load(cluster.security_dir, "client"))


def keyless(addr: str, frames: list[bytes], identity: bytes | None = None) -> bool:
    """Send ``frames`` from a plain socket (no CURVE); whether anything came back."""
    sock = context().socket(zmq.DEALER)
    sock.linger = 0
    if identity is not None:
        sock.identity = identity
    try:
        sock.connect(f"tcp://{addr}")
        sock.send_multipart(frames)
        return bool(sock.poll(NOTHING_THROUGH_MS))
    finally:
        sock.close(0)


def call(cluster: LocalCluster, op: str, body: Any, frames: list[Any] | None = None) -> Any:
    with RpcClient(cluster.master_addrs, timeout=3.0) as client:
        return client.call(op, body, frames=frames or [], retry=False)


def fn_submit_system(command: str) -> tuple[dict[str, Any], list[Any]]:
    return {"tasks": [[1, "os:system", 0, 2]], "reply": ""}, pack(command)


def function_job(name: str, function: str, tasks: int, arg: Any) -> dict[str, Any]:
    data = {"job-type": "function", "name": name, "function": function, "tasks": tasks}
    return build_function_job({**data, "args": [arg]}, "<test>").to_dict()


def run_function_job(cluster: LocalCluster, tasks: int = 4) -> list[Any]:
    spec = function_job("ok", "zdf.jobs.examples:square", tasks, 3)
    job_id = call(cluster, P.SUBMIT_JOB, {"spec": spec})["job_id"]
    job = wait_until(
        lambda: (
            (j := call(cluster, P.JOB_STATUS, {"job_id": job_id}))["state"]
            in ("finished", "failed")
            and j
        ),
        60,
        "the job to end",
    )
    assert job["state"] == "finished", job
    return [t["info"].get("result") for t in job["tasks"]]


def assert_still_serving(cluster: LocalCluster) -> None:
    states = {r["id"]: r["state"] for r in call(cluster, P.EXECUTOR_LIST, None)}
    assert states == {c.extra["id"]: "alive" for c in cluster.executors}
    with zdf.connect(cluster.master_addr) as client:
        assert [client.submit(examples.square, i).result(20) for i in range(5)] == [0, 1, 4, 9, 16]
    assert run_function_job(cluster) == [9, 9, 9, 9]


@pytest.mark.cluster(executors=2, workers=1)
def test_hostile_peers_are_refused_and_the_cluster_keeps_serving(
    cluster: LocalCluster, tmp_path: Any
) -> None:
    marker = tmp_path / "pwned"
    body, frames = fn_submit_system(f"touch {marker}")
    # 1. os:system through fn_submit: no keys -> nothing through; executor keys -> refused.
    assert not keyless(cluster.master_addr, [encode(Kind.REQUEST, P.FN_SUBMIT, 1, body), *frames])
    with role(cluster, "executor"), pytest.raises(PermissionDenied):
        call(cluster, P.FN_SUBMIT, body, frames)
    with role(cluster, "executor"), pytest.raises(PermissionDenied):
        call(cluster, P.SUBMIT_JOB, {"spec": {}})
    # 2. the framework and election keys: only a master writes them; clients write /app/.
    assert not keyless(
        cluster.meta_addrs[0], [encode(Kind.REQUEST, "delete", 1, {"key": b"/zdf/"})]
    )
    with MetaClient(cluster.meta_addrs, timeout=3.0) as meta:
        with pytest.raises(PermissionDenied):
            meta.delete("/zdf/framework/jobs/", prefix=True)
        with pytest.raises(PermissionDenied):
            meta.put("/zdf/election/master", "fake")
        with pytest.raises(PermissionDenied):
            meta.txn([], success=[Delete(b"/zdf/", prefix=True)])
        meta.put("/app/mine", "ok")
        assert meta.get("/app/mine").value == b"ok"
        assert meta.get("/zdf/election/master") is not None
    # 3./4. register (new id, or a live executor's id) and fn_hello: executors only, and a
    # live executor's id is bound to the connection that registered it.
    for op, req in [
        (P.REGISTER, {"executor_id": "evil", "addr": "127.0.0.1:9", "slots": 4096}),
        (P.FN_HELLO, {"executor_id": "exec-1", "worker": "w0"}),
        (P.TASK_STATE, {"job_id": "j", "task_id": "t", "attempt": 1, "state": "finished"}),
    ]:
        assert not keyless(cluster.master_addr, [encode(Kind.REQUEST, op, 1, req)])
        with pytest.raises(PermissionDenied):
            call(cluster, op, req)
    with role(cluster, "executor"), pytest.raises(PermissionDenied, match="taken"):
        call(cluster, P.REGISTER, {"executor_id": "exec-1", "addr": "127.0.0.1:9", "slots": 1})
    # ... and with executor keys, a connection that is not exec-1 can neither pose as one
    # of its workers (the hello must name exec-1's session) nor report its workers lost.
    with role(cluster, "executor"):
        for session in ({}, {"session": "0" * 32}):
            with pytest.raises(PermissionDenied, match="not a worker"):
                call(cluster, P.FN_HELLO, {"executor_id": "exec-1", "worker": "w9", **session})
        with pytest.raises(PermissionDenied, match="reports its workers"):
            call(cluster, P.WORKER_LOST, {"executor_id": "exec-1", "worker": "w0"})
    # 5. publish_endpoint: without an attempt, or from a connection that is not the
    # task's executor (even with executor keys and the right attempt): refused.
    spec = function_job("slow", "zdf.jobs.examples:spin", 1, 30)
    job_id = call(cluster, P.SUBMIT_JOB, {"spec": spec})["job_id"]
    task = wait_until(
        lambda: [
            t
            for t in call(cluster, P.JOB_STATUS, {"job_id": job_id})["tasks"]
            if t["state"] == "running"
        ],
        30,
        "the task to run",
    )[0]
    publish = {
        "job_id": job_id,
        "task_id": task["id"],
        "name": "out",
        "addr": "tcp://127.0.0.1:9",
    }
    with role(cluster, "executor"):
        with pytest.raises(ProtocolError, match="attempt"):
            call(cluster, P.PUBLISH_ENDPOINT, publish)
        with pytest.raises(JobError, match="refused"):
            call(cluster, P.PUBLISH_ENDPOINT, {**publish, "attempt": task["attempt"]})
    call(cluster, P.JOB_CANCEL, {"job_id": job_id})
    # 7. a Raft vote with an absurd term on a peer port, as member "meta-2": from no keys
    # and from a client's keys nothing gets through, the term stays.
    vote = frame(Vote(term=10**15, last_index=0, last_term=0))
    with MetaClient(cluster.meta_addrs, timeout=3.0) as meta:
        term = meta.status()["term"]
        assert not keyless(cluster.meta_peers[0], [vote], identity=b"meta-2")
        peer = make_socket(
            zmq.DEALER, connect=cluster.meta_peers[0], identity=b"meta-2", server_role="metastore"
        )
        try:
            peer.send(vote)
            assert not peer.poll(NOTHING_THROUGH_MS)
        finally:
            peer.close(0)
        assert meta.status()["term"] == term
    # 8./9. nesting and bad addresses: a clear error, nothing kept.
    deep: Any = 1
    for _ in range(1000):
        deep = {"c": deep}
    with role(cluster, "executor"):
        with pytest.raises(ProtocolError, match="nested"):
            call(
                cluster, P.PROGRESS, {"job_id": "j", "task_id": "t", "attempt": 1, "counters": deep}
            )
        with pytest.raises(ProtocolError, match="addr"):
            call(cluster, P.REGISTER, {"executor_id": "e9", "addr": "nocolon", "slots": 1})
    # 10. a job too large is refused before anything of it is kept (20,000 tasks of a
    # 300-byte argument: a 6 MB spec, over max-job-spec-bytes).
    big = function_job("big", "zdf.jobs.examples:square", 20_000, "x" * 300)
    jobs_before = len(call(cluster, P.JOB_LIST, None))
    with pytest.raises(LimitExceeded):
        call(cluster, P.SUBMIT_JOB, {"spec": big})
    assert len(call(cluster, P.JOB_LIST, None)) == jobs_before
    assert not marker.exists()
    assert_still_serving(cluster)


@pytest.mark.slow
@pytest.mark.cluster(executors=2, workers=1)
def test_a_client_with_keys_cannot_pose_as_a_worker_or_flood_the_master(
    cluster: LocalCluster,
) -> None:
    # 11. one client's queue is bounded; the refusal is an error reply, nothing queued.
    with pytest.raises(LimitExceeded):
        call(
            cluster,
            P.FN_SUBMIT,
            {"tasks": [[i, "zdf.jobs.examples:square", 0, 2] for i in range(60_000)], "reply": ""},
            [part for _ in range(60_000) for part in pack(1)],
        )
    # 11. leases: a non-master may not take a 30-day lease.
    with MetaClient(cluster.meta_addrs, timeout=3.0) as meta, pytest.raises(LimitExceeded):
        meta.lease_grant(30 * 24 * 3600)
    assert_still_serving(cluster)


@pytest.mark.slow
@pytest.mark.cluster(executors=1, workers=1)
def test_heartbeats_of_another_executor_do_not_keep_it_alive(cluster: LocalCluster) -> None:
    """6. A forged heartbeat (executor keys, a PUB the master was pointed at) for an
    executor that stopped: the master does not take it, the executor goes dead."""
    from zdf.master.heartbeats import HeartbeatPublisher
    from zdf.wire.sockets import free_port

    addr = f"127.0.0.1:{free_port()}"
    with role(cluster, "executor"):
        publisher = HeartbeatPublisher(addr, "exec-1", 0, allow=security.MASTERS)
        try:
            call(cluster, P.REGISTER, {"executor_id": "forger", "addr": addr, "slots": 0})
            victim = cluster.executors[0]
            cluster.kill(victim)

            def beat_and_check() -> bool:
                publisher.beat({"tasks": 0, "session": ""})
                return cluster.executor_state("exec-1") == "dead"

            wait_until(beat_and_check, 20, "the stopped executor to be declared dead")
        finally:
            publisher.close()
