"""Task graphs in the master on their own: inputs, placement by bytes, drops, lineage."""

from __future__ import annotations

from typing import Any

from tests.master.test_fnqueue import CLIENT, FakeChannel, call, runs
from zdf import protocol as P
from zdf.master.fnqueue import FunctionQueue
from zdf.wire.payload import pack, unpack
from zdf.wire.rpc import DEFER, Call


def setup(n: int = 2) -> tuple[FakeChannel, FunctionQueue, list[bytes]]:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    peers = []
    for i in range(n):
        peer = f"exec-{i}/w0/{i}".encode()
        body = {"executor_id": f"exec-{i}", "worker": "w0", "store": f"tcp://127.0.0.1:{9000 + i}"}
        queue.on_hello(call(P.FN_HELLO, body, peer))
        peers.append(peer)
    return channel, queue, peers


def submit(queue: FunctionQueue, tid: int, deps: list[Any] | None = None) -> None:
    entry: list[Any] = [tid, "m:f", 1, 1]
    if deps is not None:
        entry.append({"deps": deps})
    queue.on_submit(call(P.FN_SUBMIT, {"tasks": [entry], "reply": "r"}, CLIENT, pack([[], {}])))


def finish(queue: FunctionQueue, tid: int, nbytes: int = 10, error: Any = None) -> bytes:
    task = queue.by_client[(CLIENT, tid)]
    assert task.worker is not None
    peer = task.worker
    frames = pack(error) if error is not None else []
    entry = [task.key, error is None, len(frames), 0.001, nbytes]
    queue.on_done(call(P.FN_DONE, {"results": [entry]}, peer, frames))
    return peer


def test_a_task_waits_for_its_inputs_then_goes_where_most_bytes_are() -> None:
    channel, queue, peers = setup()
    queue.deps.depth = 0  # nothing sent ahead of its inputs (tests/master/test_fnpipeline.py)
    submit(queue, 1)
    submit(queue, 2)
    submit(queue, 3, deps=[1, 2])
    assert sorted(t for tids in runs(channel).values() for t in tids) == [1, 2]
    small = finish(queue, 1, nbytes=10)
    assert 3 not in [t for tids in runs(channel).values() for t in tids]
    big = finish(queue, 2, nbytes=10_000_000)
    assert small != big
    assert runs(channel)[big][-1] == 3  # where the 10 MB input is
    body = next(b for b, _, _ in channel.of(P.FN_RUN) if b["tasks"][0][4] == 3)
    inputs = body["tasks"][0][5]
    assert [spec[2] for spec in inputs] == [10, 10_000_000]
    assert inputs[1][1] == [f"tcp://127.0.0.1:{9000 + peers.index(big)}"]


def test_a_failed_input_fails_the_chain_with_its_error() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    submit(queue, 3, deps=[2])
    error = {"type": "ValueError", "module": "builtins", "message": "bad", "traceback": "tb"}
    finish(queue, 1, error=error)
    failed = {e[0]: unpack(f) for body, _, f in channel.of(P.FN_RESULT) for e in body["results"]}
    assert set(failed) == {2, 3} and failed[2]["message"] == "bad"


def test_released_results_are_dropped_once_no_task_needs_them() -> None:
    channel, queue, _ = setup()
    submit(queue, 1)
    submit(queue, 2, deps=[1])
    peer = finish(queue, 1)
    queue.on_release(call(P.FN_RELEASE, {"tids": [1]}, CLIENT))
    assert channel.of(P.FN_DROP) == []  # task 2 still needs it
    finish(queue, 2)
    assert channel.of(P.FN_DROP) == [({"keys": [1]}, peer, [])]
    queue.on_release(call(P.FN_RELEASE, {"tids": [2]}, CLIENT))
    assert queue.status()["results"] == 0


def test_an_input_lost_with_its_worker_is_computed_again() -> None:
    channel, queue, peers = setup()
    queue.deps.depth = 0
    submit(queue, 1)
    holder = finish(queue, 1)
    queue.worker_lost(holder.split(b"/")[0].decode())
    submit(queue, 2, deps=[1])
    survivor = next(p for p in peers if p != holder)
    assert runs(channel)[survivor] == [1]  # run again, where it can be
    assert queue.status()["recomputed"] == 1
    finish(queue, 1)
    assert runs(channel)[survivor] == [1, 2]


def test_a_worker_over_its_memory_limit_is_not_preferred() -> None:
    channel, queue, peers = setup()
    submit(queue, 1)
    holder = finish(queue, 1, nbytes=1_000_000)
    queue.on_done(call(P.FN_DONE, {"results": [], "over": True}, holder))
    assert queue.workers[holder].over_limit
    submit(queue, 2, deps=[1])
    other = next(p for p in peers if p != holder)
    assert runs(channel)[other] == [2]


def test_durations_are_learnt_from_reports_that_carry_sizes() -> None:
    _, queue, _ = setup()
    submit(queue, 1)
    finish(queue, 1, nbytes=123)  # [key, ok, nframes, seconds, nbytes]
    assert queue.durations.estimate("m:f") is not None


def test_a_scatter_before_any_worker_is_answered_when_one_says_hello() -> None:
    channel = FakeChannel()
    queue = FunctionQueue(channel)  # type: ignore[arg-type]
    body = {"tids": [1, 2], "nbytes": [8, 8], "broadcast": False}
    request = Call(channel, CLIENT, P.FN_SCATTER, 5, body, [], False)  # type: ignore[arg-type]
    assert queue.on_scatter(request) is DEFER
    hello = {"executor_id": "exec-0", "worker": "w0", "direct": "tcp://d", "store": "tcp://s"}
    queue.on_hello(call(P.FN_HELLO, hello, b"exec-0/w0/0"))
    ((answer, peer, _),) = channel.of(f"reply:{P.FN_SCATTER}")
    assert peer == CLIENT and answer["puts"][0][0] == "tcp://d"
    assert [tid for tid, _ in answer["puts"][0][1]] == [1, 2]
