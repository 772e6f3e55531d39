"""Tasks sent ahead of their inputs (pipelining, zdf.master.fndeps) in the master alone:
the chain path, fn_ready notes, failures, cancel, steals, lost workers, priorities,
the depth bound and references."""

from __future__ import annotations

from typing import Any

from tests.master.test_fndeps import finish, setup, submit
from tests.master.test_fnqueue import CLIENT, FakeChannel, call, runs
from zdf import protocol as P
from zdf.master.fnqueue import FunctionQueue
from zdf.wire.payload import pack, unpack

ERROR = {"type": "ValueError", "module": "builtins", "message": "bad", "traceback": "tb"}


def key(queue: FunctionQueue, tid: int) -> int:
    task = queue.by_client.get((CLIENT, tid)) or queue.deps.done[(CLIENT, tid)]
    return task.key


def entries(channel: FakeChannel) -> dict[int, list[Any]]:
    """Every fn_run entry sent, by client task id (the last one sent for each)."""
    return {e[4]: e for body, _, _ in channel.of(P.FN_RUN) for e in body["tasks"]}


def results(channel: FakeChannel) -> dict[int, Any]:
    return {e[0]: unpack(f) for body, _, f in channel.of(P.FN_RESULT) for e in body["results"]}


def test_a_chain_goes_to_its_worker_ahead_of_its_inputs() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    submit(queue, 3, deps=[2])
    sent = runs(channel)
    (peer,) = [p for p, tids in sent.items() if tids]
    assert sent[peer] == [1, 2, 3]  # all three before anything is done
    assert entries(channel)[3][5] == [[key(queue, 2), None, 0]]  # made there, not yet
    assert queue.workers[peer].pipelined == {key(queue, 2), key(queue, 3)}
    assert queue.workers[peer].inflight == {key(queue, 1)}  # not counted as load
    finish(queue, 1)
    assert queue.workers[peer].inflight == {key(queue, 2)}  # now its worker runs it
    finish(queue, 2)
    finish(queue, 3)
    assert channel.of(P.FN_READY) == []  # all made where they were needed
    assert queue.status()["pipelined"] == 2 and not queue.inflight


def test_an_input_made_on_another_worker_is_announced_with_its_holder() -> None:
    channel, queue, peers = setup()
    submit(queue, 1)
    submit(queue, 2)
    submit(queue, 3, deps=[1, 2])
    where = {tid: p for p, tids in runs(channel).items() for tid in tids}
    assert where[1] != where[2] and where[3] == where[1]
    finish(queue, 2, nbytes=77)
    ((note, peer, _),) = channel.of(P.FN_READY)
    holder = f"tcp://127.0.0.1:{9000 + peers.index(where[2])}"
    assert peer == where[3] and note == {"inputs": [[key(queue, 2), [holder], 77]]}
    finish(queue, 1)
    assert queue.workers[where[3]].inflight == {key(queue, 3)}
    finish(queue, 3)
    assert len(channel.of(P.FN_READY)) == 1


def test_a_failed_input_fails_tasks_sent_ahead_and_their_worker_forgets_them() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    submit(queue, 3, deps=[2])
    k2, k3 = key(queue, 2), key(queue, 3)
    peer = finish(queue, 1, error=ERROR)
    failed = results(channel)
    assert set(failed) == {2, 3} and failed[3]["message"] == "bad" and failed[3]["traceback"]
    forgotten = [k for body, p, _ in channel.of(P.FN_FORGET) if p == peer for k in body["keys"]]
    assert sorted(forgotten) == [k2, k3]
    assert not queue.inflight and not queue.workers[peer].pipelined
    # The worker ran 2 itself (its input failed there) and says so late: ignored.
    queue.on_done(call(P.FN_DONE, {"results": [[k2, False, 0, 0.001, 5]]}, peer))
    assert set(results(channel)) == {2, 3}


def test_a_task_sent_ahead_is_canceled_and_lets_its_inputs_go() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    k2 = key(queue, 2)
    request = call(P.FN_CANCEL, {"tids": [2]}, CLIENT)
    request.is_event = False  # type: ignore[misc]
    request.channel = channel  # type: ignore[assignment]
    queue.on_cancel(request)  # sent ahead: not started, so withdrawn (not "running")
    ((steal, peer, _),) = channel.of(P.FN_STEAL)
    assert steal["keys"] == [k2] and "ref" in steal
    queue.on_stolen(call(P.FN_STOLEN, {"keys": [k2], "ref": steal["ref"]}, peer))
    assert channel.of(f"reply:{P.FN_CANCEL}")[0][0] == {"canceled": [2]}
    finish(queue, 1)
    queue.on_release(call(P.FN_RELEASE, {"tids": [1]}, CLIENT))
    assert channel.of(P.FN_DROP) == [({"keys": [1]}, peer, [])]  # key 1: task 1
    assert queue.status()["results"] == 0


def test_a_steal_never_asks_for_a_task_sent_ahead() -> None:
    channel, queue, peers = setup()
    now = [100.0]
    queue.clock = lambda: now[0]
    queue.durations.learn("m:f", 0.001)
    submit(queue, 1)
    for tid in (2, 3):  # short, known: more go to the same worker
        submit(queue, tid)
    submit(queue, 4, deps=[1])
    k4 = key(queue, 4)
    victim = queue.by_client[(CLIENT, 4)].worker
    assert victim is not None and k4 in queue.workers[victim].pipelined
    other = next(p for p in peers if p != victim)
    for tid in [t for t in (1, 2, 3) if queue.by_client[(CLIENT, t)].worker == other]:
        finish(queue, tid)  # the other worker idles
    now[0] += 10  # long past every estimate
    queue.pump()
    stolen = [k for body, p, _ in channel.of(P.FN_STEAL) for k in body["keys"]]
    assert k4 not in stolen


def test_a_task_sent_ahead_to_a_dead_worker_follows_its_input_and_keeps_its_retries() -> None:
    channel, queue, peers = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    dead = queue.by_client[(CLIENT, 1)].worker
    assert dead is not None and runs(channel)[dead] == [1, 2]
    queue.worker_lost(dead.split(b"/")[0].decode())
    survivor = next(p for p in peers if p != dead)
    assert runs(channel)[survivor] == [1, 2]  # its input first, then it, ahead again
    task = queue.by_client[(CLIENT, 2)]
    assert task.retries == 1 and task.key in queue.workers[survivor].pipelined
    finish(queue, 1)
    finish(queue, 2)
    assert not queue.inflight


def test_a_task_sent_ahead_waits_for_an_input_rerun_after_its_holder_died() -> None:
    channel, queue, peers = setup(n=3)
    submit(queue, 1)
    submit(queue, 2)
    submit(queue, 3, deps=[1, 2])
    where = {tid: p for p, tids in runs(channel).items() for tid in tids}
    waiting_on, dead = where[3], where[2]
    assert dead != waiting_on
    queue.worker_lost(dead.split(b"/")[0].decode())  # 2 dies with its worker
    rerun = queue.by_client[(CLIENT, 2)].worker
    assert rerun is not None and rerun not in (dead, waiting_on)  # the idle worker
    assert key(queue, 3) in queue.workers[waiting_on].pipelined  # 3 stays where it waits
    finish(queue, 2, nbytes=9)
    ((note, peer, _),) = channel.of(P.FN_READY)
    holder = f"tcp://127.0.0.1:{9000 + peers.index(rerun)}"
    assert peer == waiting_on and note["inputs"] == [[key(queue, 2), [holder], 9]]
    finish(queue, 1)
    assert queue.workers[waiting_on].inflight == {key(queue, 3)}


def test_a_task_is_not_sent_ahead_past_queued_work_of_a_higher_priority() -> None:
    channel, queue, _ = setup(n=1)
    submit(queue, 1)  # of unknown duration: the only worker is busy with it
    entry: list[Any] = [5, "m:f", 1, 1, {"priority": 10}]
    queue.on_submit(call(P.FN_SUBMIT, {"tasks": [entry], "reply": "r"}, CLIENT, pack([[], {}])))
    assert queue.status()["queued"] == 1
    submit(queue, 2, deps=[1])
    assert 2 not in [t for tids in runs(channel).values() for t in tids]
    finish(queue, 1)
    assert runs(channel)[next(iter(queue.workers))][:2] == [1, 5]  # the urgent one first


def test_no_more_than_depth_tasks_wait_ahead_on_a_worker() -> None:
    channel, queue, _ = setup(n=1)
    queue.deps.depth = 2
    submit(queue, 1)
    for tid in range(2, 6):
        submit(queue, tid, deps=[tid - 1])
    (peer,) = queue.workers
    assert runs(channel)[peer] == [1, 2, 3]
    finish(queue, 1)  # 2 runs now: room for one more ahead, and the chain follows
    assert runs(channel)[peer] == [1, 2, 3, 4]
    finish(queue, 2)
    assert runs(channel)[peer] == [1, 2, 3, 4, 5]
    for tid in (3, 4, 5):
        finish(queue, tid)
    assert not queue.inflight and not queue.deps.blocked.get(peer)


def test_a_task_sent_ahead_holds_its_input_until_it_ends() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    queue.on_release(call(P.FN_RELEASE, {"tids": [1]}, CLIENT))
    peer = finish(queue, 1)
    assert channel.of(P.FN_DROP) == []  # 2 still needs it
    finish(queue, 2)
    assert channel.of(P.FN_DROP) == [({"keys": [1]}, peer, [])]


def test_a_task_sent_ahead_whose_fetched_input_died_is_taken_back_and_sent_again() -> None:
    channel, queue, peers = setup(n=3)
    submit(queue, 1)
    submit(queue, 2)  # on another worker: the first runs 1, of unknown duration
    holder = finish(queue, 1, nbytes=0)
    submit(queue, 3, deps=[2, 1])  # 2 not made yet; 1 made on ``holder``
    where = queue.by_client[(CLIENT, 3)].worker
    assert where is not None and where != holder
    queue.worker_lost(holder.split(b"/")[0].decode())  # 1 is lost: made again
    assert queue.status()["recomputed"] == 1
    steals = [(body["keys"], p) for body, p, _ in channel.of(P.FN_STEAL)]
    assert steals == [([key(queue, 3)], where)]
    queue.on_stolen(call(P.FN_STOLEN, {"keys": [key(queue, 3)]}, where))
    assert queue.by_client[(CLIENT, 3)].worker == where  # ahead again, waiting for both
    assert entries(channel)[3][5] == [[key(queue, 2), None, 0], [key(queue, 1), None, 0]]
    finish(queue, 1)
    finish(queue, 2)
    finish(queue, 3)
    assert not queue.inflight and len(peers) == 3


def test_a_task_canceled_while_it_waited_in_the_master_is_not_sent_ahead() -> None:
    channel, queue, _ = setup(n=1)
    queue.deps.depth = 1
    submit(queue, 1)
    submit(queue, 2, deps=[1])  # ahead (the depth is 1)
    submit(queue, 3, deps=[2])  # waits in the master: no room ahead
    assert queue.on_cancel(call(P.FN_CANCEL, {"tids": [3]}, CLIENT)) == {"canceled": [3]}
    finish(queue, 1)  # room again: 3 must not go
    (peer,) = queue.workers
    assert runs(channel)[peer] == [1, 2]
    finish(queue, 2)
    assert runs(channel)[peer] == [1, 2] and not queue.inflight
    assert (CLIENT, 3) not in queue.deps.done  # 3 left no record behind
