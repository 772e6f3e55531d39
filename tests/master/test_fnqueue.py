"""The master's function queue on its own: a fake channel records what it would send."""

from __future__ import annotations

from typing import Any

import pytest

from zdf import protocol as P
from zdf.config import MasterConfig
from zdf.master.fnqueue import FunctionQueue
from zdf.master.server import Master
from zdf.master.states import ExecutorState
from zdf.wire.payload import pack, unpack
from zdf.wire.rpc import DEFER, Call
from zdf.wire.sockets import free_port

CLIENT = b"c-1"
WORKER = b"exec-1/w0/1"


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, bytes | None, list[Any]]] = []

    def notify(
        self, op: str, body: Any = None, *, peer: bytes | None = None, frames: Any = ()
    ) -> bool:
        self.sent.append((op, body, peer, list(frames)))
        return True

    def send(  # what Call.reply uses
        self, kind: Any, op: str, rid: int, body: Any, *, peer: bytes | None = None, **_: Any
    ) -> bool:
        self.sent.append((f"reply:{op}", body, peer, []))
        return True

    def of(self, op: str) -> list[tuple[Any, bytes | None, list[Any]]]:
        return [(body, peer, frames) for o, body, peer, frames in self.sent if o == op]


def call(op: str, body: Any, peer: bytes, frames: list[Any] | None = None) -> Call:
    return Call(FakeChannel(), peer, op, 0, body, frames or [], True)  # type: ignore[arg-type]


def submit(
    queue: FunctionQueue,
    tids: list[int],
    fn: str = "m:f",
    reply: str = "",
    options: dict[str, Any] | None = None,
) -> None:
    tasks = [[tid, fn, 1, 1, *([options] if options else [])] for tid in tids]
    frames = [pack([[tid], {}])[0] for tid in tids]
    queue.on_submit(call(P.FN_SUBMIT, {"tasks": tasks, "reply": reply}, CLIENT, frames))


def hello(queue: FunctionQueue, peer: bytes = WORKER, executor: str = "exec-1") -> None:
    name = peer.split(b"/")[1].decode() if b"/" in peer else "w0"
    queue.on_hello(call(P.FN_HELLO, {"executor_id": executor, "worker": name}, peer))


def workers(queue: FunctionQueue, n: int, executor: str = "exec-1") -> list[bytes]:
    peers = [f"{executor}/w{i}/{i}".encode() for i in range(n)]
    for peer in peers:
        hello(queue, peer, executor)
    return peers


def runs(channel: FakeChannel) -> dict[bytes, list[int]]:
    """Client task ids sent to each worker, in order."""
    out: dict[bytes, list[int]] = {}
    for body, peer, _ in channel.of(P.FN_RUN):
        assert peer is not None
        out.setdefault(peer, []).extend(t[4] for t in body["tasks"])
    return out


def done(queue: FunctionQueue, tid: int, seconds: float) -> None:
    task = queue.by_client[(CLIENT, tid)]
    assert task.worker is not None
    results = {"results": [[task.key, True, 0, seconds]]}
    queue.on_done(call(P.FN_DONE, results, task.worker))


def test_a_burst_of_unknown_tasks_goes_one_per_worker() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    peers = workers(queue, 4)
    submit(queue, list(range(1, 9)), reply="tcp://127.0.0.1:5555")
    assert sorted(len(tids) for tids in runs(channel).values()) == [1, 1, 1, 1]
    done(queue, 1, 0.5)  # learnt: half a second, far more than a round trip
    assert len(runs(channel)[peers[0]]) == 2 and queue.status()["queued"] == 3
    done(queue, 2, 0.5)
    assert all(len(queue.workers[p].inflight) == 1 for p in peers)


def test_short_tasks_are_batched_but_shared_out() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    queue.durations.learn("m:f", 2e-6)
    workers(queue, 4)
    submit(queue, list(range(64)))
    assert sorted(len(tids) for tids in runs(channel).values()) == [16, 16, 16, 16]


def test_short_tasks_never_wait_behind_a_long_one() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    peers = workers(queue, 4)
    submit(queue, [0], fn="m:long")
    (long_worker,) = runs(channel)
    submit(queue, list(range(1, 41)), fn="m:short")
    for tid in range(1, 41):
        if queue.by_client.get((CLIENT, tid)) and queue.by_client[(CLIENT, tid)].worker:
            done(queue, tid, 0.05)
    assert runs(channel)[long_worker] == [0]
    assert sum(len(runs(channel)[p]) for p in peers if p != long_worker) == 40


def test_an_idle_worker_takes_back_what_waits_on_a_late_one() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    now = [100.0]
    queue.clock = lambda: now[0]
    queue.durations.learn("m:f", 1e-4)
    (busy,) = workers(queue, 1)
    submit(queue, list(range(10)))
    assert len(runs(channel)[busy]) == 10  # 1 ms of work: all prefetched
    hello(queue, b"exec-1/w1/1")  # idle; the first still runs its first task
    assert channel.of(P.FN_STEAL) == []  # not late yet
    now[0] += 0.05  # its 1 ms of work is long overdue: its first task is slower
    queue.pump()
    ((steal, peer, _),) = channel.of(P.FN_STEAL)
    assert peer == busy and sorted(steal["keys"]) == sorted(queue.workers[busy].inflight)
    given_back = [queue.by_client[(CLIENT, tid)].key for tid in range(1, 10)]
    queue.on_stolen(call(P.FN_STOLEN, {"keys": given_back}, busy))
    assert queue.status()["stolen"] == 9
    assert runs(channel)[b"exec-1/w1/1"], "the idle worker got some of them"


def test_resources_are_held_and_infeasible_tasks_fail_at_once() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    peers = workers(queue, 2)
    queue.set_resources("exec-1", {"cpu": 2, "gpu": 1})
    submit(queue, [1, 2], options={"resources": {"gpu": 1}})
    assert sum(len(tids) for tids in runs(channel).values()) == 1, "one gpu: one at a time"
    submit(queue, [3], fn="m:g")  # a cpu task passes the one waiting for the gpu
    assert sorted(t for tids in runs(channel).values() for t in tids) in ([1, 3], [2, 3])
    submit(queue, [4], options={"resources": {"gpu": 2}})
    ((result, peer, frames),) = channel.of(P.FN_RESULT)
    error = unpack(frames)
    assert peer == CLIENT and result["results"] == [[4, False, 1]]
    assert error["type"] == "InfeasibleTask" and "gpu=2" in error["message"]
    gpu_tid = next(tid for tid in (1, 2) if queue.by_client[(CLIENT, tid)].worker)
    done(queue, gpu_tid, 0.01)
    assert queue.by_client[(CLIENT, 3 - gpu_tid)].worker in peers, "the gpu is free again"


def test_priority_orders_the_queue() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    hello(queue)
    submit(queue, [1, 2, 3])
    submit(queue, [4], options={"priority": 5})
    for tid in (1, 4, 2):
        done(queue, tid, 0.5)
    assert runs(channel)[WORKER] == [1, 4, 2, 3]


def test_cancel_withdraws_a_task_only_if_its_worker_had_not_started_it() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    queue.durations.learn("m:f", 1e-4)
    hello(queue)
    submit(queue, [1, 2, 3])
    first = Call(channel, CLIENT, P.FN_CANCEL, 7, {"tids": [2]})  # type: ignore[arg-type]
    assert queue.on_cancel(first) is DEFER
    ((steal, _, _),) = channel.of(P.FN_STEAL)
    key = queue.by_client[(CLIENT, 2)].key
    assert steal == {"keys": [key], "ref": steal["ref"]}
    queue.on_stolen(call(P.FN_STOLEN, {"keys": [key], "ref": steal["ref"]}, WORKER))
    assert channel.of(f"reply:{P.FN_CANCEL}")[-1][0] == {"canceled": [2]}
    # The first task a worker has runs (or is about to): not canceled, without asking.
    first_one = Call(channel, CLIENT, P.FN_CANCEL, 8, {"tids": [1]})  # type: ignore[arg-type]
    assert queue.on_cancel(first_one) == {"canceled": []}
    third = Call(channel, CLIENT, P.FN_CANCEL, 9, {"tids": [3]})  # type: ignore[arg-type]
    queue.on_cancel(third)
    ref = channel.of(P.FN_STEAL)[-1][0]["ref"]
    queue.on_stolen(call(P.FN_STOLEN, {"keys": [], "ref": ref}, WORKER))  # it had started
    assert channel.of(f"reply:{P.FN_CANCEL}")[-1][0] == {"canceled": []}
    assert queue.status()["canceled"] == 1
    assert (CLIENT, 1) in queue.by_client and (CLIENT, 3) in queue.by_client


def test_direct_results_free_the_window_without_passing_through() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel, window=2)  # type: ignore[arg-type]
    queue.durations.learn("m:f", 1e-5)  # short: batched up to the window
    hello(queue)
    submit(queue, [1, 2, 3], reply="tcp://127.0.0.1:5555")
    ((run, peer, _),) = channel.of(P.FN_RUN)
    assert peer == WORKER
    reply = "tcp://127.0.0.1:5555"
    assert [t[3:] for t in run["tasks"]] == [[reply, 1], [reply, 2]]
    keys = [t[0] for t in run["tasks"]]
    queue.on_done(call(P.FN_DONE, {"results": [[keys[0], True, 0]]}, WORKER))
    assert channel.of(P.FN_RESULT) == []  # the worker answered the client itself
    assert len(channel.of(P.FN_RUN)) == 2  # the freed slot took task 3
    assert queue.status()["completed"] == 1


def test_results_without_a_reply_address_go_through_the_master() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    hello(queue)
    submit(queue, [7])
    ((run, _, _),) = channel.of(P.FN_RUN)
    key = run["tasks"][0][0]
    queue.on_done(call(P.FN_DONE, {"results": [[key, True, 1]]}, WORKER, pack(49)))
    ((result, peer, frames),) = channel.of(P.FN_RESULT)
    assert peer == CLIENT and result["results"] == [[7, True, 1]] and unpack(frames) == 49


def test_a_task_submitted_again_after_a_failover_runs_once() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel, window=1)  # type: ignore[arg-type]
    hello(queue)
    submit(queue, [1, 2])
    submit(queue, [1, 2, 3])  # the client's unanswered tasks, resent to this master
    assert queue.status()["queued"] == 2, "tasks 2 and 3 wait; task 1 runs"
    ((run, _, _),) = channel.of(P.FN_RUN)
    assert [t[4] for t in run["tasks"]] == [1]


def test_pickled_functions_are_refused_unless_allowed() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    hello(queue)
    submit(queue, [1], fn=P.PICKLED_FN)
    assert channel.of(P.FN_RUN) == []
    ((result, peer, frames),) = channel.of(P.FN_RESULT)
    assert peer == CLIENT and result["results"] == [[1, False, 1]]
    error = unpack(frames)
    assert error["type"] == "PermissionError" and "allow-pickle" in error["message"]
    assert queue.on_client(call(P.FN_CLIENT, {}, CLIENT))["allow_pickle"] is False

    allowed = FunctionQueue(FakeChannel(), allow_pickle=True)  # type: ignore[arg-type]
    hello(allowed)
    submit(allowed, [1], fn=P.PICKLED_FN)
    assert len(allowed.channel.of(P.FN_RUN)) == 1  # type: ignore[attr-defined]


def test_a_lost_workers_tasks_are_retried_and_a_late_answer_dropped() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    hello(queue)
    submit(queue, [1], reply="tcp://127.0.0.1:5555")
    key = channel.of(P.FN_RUN)[0][0]["tasks"][0][0]
    queue.worker_lost("exec-1", "w0")
    assert queue.status()["retried"] == 1 and queue.status()["queued"] == 1
    other = b"exec-2/w0/2"
    queue.on_hello(call(P.FN_HELLO, {"executor_id": "exec-2", "worker": "w0"}, other))
    assert channel.of(P.FN_RUN)[-1][1] == other
    queue.on_done(call(P.FN_DONE, {"results": [[key, True, 0]]}, WORKER))  # the dead one
    assert queue.status()["completed"] == 0
    queue.on_done(call(P.FN_DONE, {"results": [[key, True, 0]]}, other))
    assert queue.status()["completed"] == 1 and queue.status()["inflight"] == 0


@pytest.mark.timeout(30)
def test_master_pumps_functions_when_a_suspect_executor_is_alive_again() -> None:
    config = MasterConfig(
        master_addr=f"127.0.0.1:{free_port()}", heartbeat_addr=f"127.0.0.1:{free_port()}"
    )
    master = Master(config, None)
    try:
        master.liveness.add("exec-1", 0.0)
        hello(master.functions)
        master._apply_liveness(master.liveness.disconnected("exec-1"))
        assert master.liveness.state("exec-1") is ExecutorState.SUSPECT
        submit(master.functions, [1, 2])
        assert master.functions.status()["inflight"] == 0  # held back while suspect
        master._apply_liveness(master.liveness.seen("exec-1", 1.0))
        # Pumped: one (of unknown duration) went to the worker; this test's worker is
        # no real peer, so the ROUTER refused it and it waits in the queue again.
        assert master.functions.stats["run_unsent"] == 1
        assert master.functions.status()["queued"] == 2
    finally:
        master.close()


def test_a_lone_task_brings_a_lease_that_ends_with_its_worker() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    busy, idle = b"exec-1/w0/1", b"exec-1/w1/2"
    for peer, name in ((busy, "w0"), (idle, "w1")):
        body = {"executor_id": "exec-1", "worker": name, "direct": f"tcp://127.0.0.1:{name}"}
        queue.on_hello(call(P.FN_HELLO, body, peer))
    submit(queue, [1], reply="tcp://127.0.0.1:5555")  # runs on w0: w1 has less work
    tasks = [[2, "m:f", 1, 1]]
    body = {"tasks": tasks, "reply": "tcp://127.0.0.1:5555#t", "lease": True}
    queue.on_submit(call(P.FN_SUBMIT, body, CLIENT, pack([[2], {}])))
    grants = channel.of(P.FN_LEASE)
    assert [peer for _, peer, _ in grants] == [idle, CLIENT]  # the worker hears first
    lease = grants[0][0]["lease"]
    assert grants[1][0] == {"lease": lease, "addr": "tcp://127.0.0.1:w1"}
    assert queue.status()["leases"] == 1
    queue.on_done(call(P.FN_DONE, {"results": [], "direct": 5, "direct_failed": 2}, idle))
    assert queue.status()["direct"] == 5 and queue.status()["completed"] == 5
    assert queue.status()["failed"] == 2
    queue.worker_lost("exec-1", "w0")
    assert channel.of(P.FN_REVOKE) == []  # another worker's death ends no lease
    queue.worker_lost("exec-1", "w1")
    revokes = channel.of(P.FN_REVOKE)
    assert sorted(peer for _, peer, _ in revokes) == sorted([idle, CLIENT])  # type: ignore[type-var]
    assert all(body == {"lease": lease} for body, _, _ in revokes)
    assert queue.status()["leases"] == 0


def test_a_client_holds_one_lease_at_a_time() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    body = {"executor_id": "exec-1", "worker": "w0", "direct": "tcp://127.0.0.1:1"}
    queue.on_hello(call(P.FN_HELLO, body, WORKER))
    for tid in (1, 2):
        ask = {"tasks": [[tid, "m:f", 1, 1]], "reply": "tcp://127.0.0.1:5555#t", "lease": True}
        queue.on_submit(call(P.FN_SUBMIT, ask, CLIENT, pack([[tid], {}])))
    first, second = (body["lease"] for body, peer, _ in channel.of(P.FN_LEASE) if peer == CLIENT)
    assert first != second and queue.status()["leases"] == 1
    # The worker is told the first one is over; the client asked again, so it knows.
    assert [(body, peer) for body, peer, _ in channel.of(P.FN_REVOKE)] == [
        ({"lease": first}, WORKER)
    ]


def test_the_oldest_lease_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zdf.master.fnleases.MAX_LEASES", 2)
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    peers = [f"exec-1/w{i}/{i}".encode() for i in range(3)]
    for i, peer in enumerate(peers):
        body = {"executor_id": "exec-1", "worker": f"w{i}", "direct": f"tcp://127.0.0.1:{i}"}
        queue.on_hello(call(P.FN_HELLO, body, peer))
    clients = [b"c-1", b"c-2", b"c-3"]  # c-1 went away without a word
    for n, client in enumerate(clients):
        ask = {"tasks": [[n, "m:f", 1, 1]], "reply": "tcp://127.0.0.1:5555#t", "lease": True}
        queue.on_submit(call(P.FN_SUBMIT, ask, client, pack([[n], {}])))
        key = next(k for k, t in queue.inflight.items() if t.client == client)
        worker = queue.inflight[key].worker
        queue.on_done(call(P.FN_DONE, {"results": [[key, True, 0, 0.001]]}, worker))  # type: ignore[arg-type]
    first, holder = next(
        (b["lease"], peer) for b, peer, _ in channel.of(P.FN_LEASE) if peer in peers
    )
    assert queue.status()["leases"] == 2
    revoked = [(b, peer) for b, peer, _ in channel.of(P.FN_REVOKE)]
    assert sorted(revoked, key=lambda r: r[1]) == [
        ({"lease": first}, b"c-1"),
        ({"lease": first}, holder),
    ]


def test_a_worker_saying_hello_again_keeps_its_leases_and_its_tasks_retries() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    body = {"executor_id": "exec-1", "worker": "w0", "direct": "tcp://127.0.0.1:1"}
    queue.on_hello(call(P.FN_HELLO, body, WORKER))
    ask = {"tasks": [[1, "m:f", 0, 1]], "reply": "tcp://127.0.0.1:5555#t", "lease": True}
    queue.on_submit(call(P.FN_SUBMIT, ask, CLIENT, pack([[1], {}])))
    assert queue.status()["inflight"] == 1 and queue.status()["leases"] == 1
    queue.on_hello(call(P.FN_HELLO, body, WORKER))  # its executor registered again
    assert channel.of(P.FN_REVOKE) == [] and queue.status()["leases"] == 1
    assert channel.of(P.FN_RESULT) == [], "a task out of retries is not lost: it runs again"
    assert [t[4] for run, _, _ in channel.of(P.FN_RUN) for t in run["tasks"]] == [1, 1]
