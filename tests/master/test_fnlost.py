"""Values that cannot be made again when their worker dies (a scattered value, a result
of a task run under a lease): the tasks needing them fail with one line that says why."""

from __future__ import annotations

from typing import Any

from tests.master.test_fndeps import setup, submit
from tests.master.test_fnqueue import CLIENT, FakeChannel, call
from zdf import protocol as P
from zdf.master.fnqueue import FunctionQueue
from zdf.wire.payload import unpack


def with_direct_ports() -> tuple[FakeChannel, FunctionQueue, list[bytes]]:
    channel, queue, peers = setup()
    for i, worker in enumerate(queue.workers.values()):
        worker.direct = f"tcp://127.0.0.1:{9200 + i}"
    return channel, queue, peers


def failures(channel: FakeChannel) -> dict[int, Any]:
    return {e[0]: unpack(f) for body, _, f in channel.of(P.FN_RESULT) for e in body["results"]}


def kill(queue: FunctionQueue, peer: bytes) -> None:
    queue.worker_lost(peer.split(b"/")[0].decode())


def test_a_lost_scattered_value_fails_its_task_saying_to_broadcast() -> None:
    channel, queue, _ = with_direct_ports()
    answer = queue.deps.scatter(CLIENT, {"tids": [1], "nbytes": [8], "broadcast": False})
    ((direct, [[_, skey]]),) = answer["puts"]
    holder = next(w.peer for w in queue.workers.values() if w.direct == direct)
    queue.on_stored(call(P.FN_STORED, {"keys": [skey]}, holder))
    kill(queue, holder)
    submit(queue, 2, deps=[1])
    error = failures(channel)[2]
    assert error["type"] == "WorkerLost" and "\n" not in error["message"]
    assert "scattered" in error["message"] and "broadcast=True" in error["message"]


def test_a_lost_result_of_a_leased_task_fails_its_task_saying_so() -> None:
    channel, queue, _ = with_direct_ports()
    holder = next(iter(queue.workers.values()))
    submit(queue, 2, deps=[[7, "lease1", holder.direct]])  # made under a lease, then taken
    kill(queue, holder.peer)
    submit(queue, 3, deps=[[7, "lease1", holder.direct]])
    error = failures(channel)[3]
    assert error["type"] == "WorkerLost" and "\n" not in error["message"]
    assert "under a lease" in error["message"] and "not made again" in error["message"]
