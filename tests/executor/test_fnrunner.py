"""The worker's function runner on its own (no cluster): pickles, errors, direct results."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack
import pytest
import zmq

from zdf import protocol as P
from zdf.executor.fnrunner import DIRECT, FunctionRunner
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.payload import REF_EXT, pack, unpack
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Call
from zdf.wire.sockets import free_port, make_socket

pytestmark = pytest.mark.timeout(30)


def runner(reactor: Reactor, allow_pickle: bool) -> FunctionRunner:
    # Nobody listens at the master address: hello requests just go unanswered.
    return FunctionRunner(reactor, f"127.0.0.1:{free_port()}", "exec-1", "w0", allow_pickle)


def to_master(fn: FunctionRunner) -> list[tuple[str, Any, list[Any]]]:
    """What ``fn`` sends the master from now on, as (op, body, frames)."""
    sent: list[tuple[str, Any, list[Any]]] = []
    fn.channel.notify = lambda op, body=None, *, peer=None, frames=(): bool(  # type: ignore[method-assign]
        sent.append((op, body, list(frames))) or True
    )
    return sent


def test_pickled_function_runs_only_where_allowed(reactor: Reactor) -> None:
    offset = 10
    blob = cloudpickle.dumps(lambda x: x + offset)
    refusing = runner(reactor, allow_pickle=False)
    try:
        ok, frames, _ = refusing._run_one(P.PICKLED_FN, [blob, *pack([[1], {}])])
        assert not ok
        error = unpack(frames)
        assert error["type"] == "PermissionError" and "allow-pickle" in error["message"]
    finally:
        refusing.close()
    allowing = runner(reactor, allow_pickle=True)
    try:
        assert allowing._run_one(P.PICKLED_FN, [blob, *pack([[1], {}])]) == (True, pack(11), 11)
        assert allowing._run_one(P.PICKLED_FN, [blob, *pack([[2], {}])]) == (True, pack(12), 12)
    finally:
        allowing.close()


def test_results_go_straight_to_the_clients_address(reactor: Reactor) -> None:
    pull = make_socket(zmq.PULL, bind="tcp://127.0.0.1:*")
    reply = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    fn = runner(reactor, allow_pickle=False)
    try:
        fn.queue.append(
            (1, "zdf.jobs.examples:square", pack([[6], {}]), reply + "#t0k", 41, None, 1)
        )
        fn.queue.append(
            (2, "zdf.jobs.examples:fail", pack([["no"], {}]), reply + "#t0k", 42, None, 2)
        )
        fn.run_slice()
        results: dict[int, Any] = {}
        deadline = time.monotonic() + 5
        while len(results) < 2 and time.monotonic() < deadline:
            reactor.run_once(0)  # a slow machine may split the tasks over two slices
            if not pull.poll(10):
                continue
            parts = pull.recv_multipart()
            msg = decode(parts[0])
            assert msg.op == P.FN_RESULT and msg.body["token"] == "t0k"
            offset = 1
            for tid, ok, nframes in msg.body["results"]:
                results[tid] = (ok, unpack(parts[offset : offset + nframes]))
                offset += nframes
        assert results[41] == (True, 36)
        assert results[42][0] is False and results[42][1]["type"] == "RuntimeError"
    finally:
        fn.close()
        pull.close(0)


def test_an_idle_worker_reports_at_once_with_each_calls_duration(reactor: Reactor) -> None:
    pull = make_socket(zmq.PULL, bind="tcp://127.0.0.1:*")
    reply = pull.getsockopt_string(zmq.LAST_ENDPOINT) + "#t"
    fn = runner(reactor, allow_pickle=False)
    sent = to_master(fn)
    try:
        fn.queue.append((1, "time:sleep", pack([[0.05], {}]), reply, 1, None, 1))
        fn.queue.append((2, "zdf.jobs.examples:noop", pack([[], {}]), reply, 2, None, 2))
        fn.run_slice()  # the sleep ends the slice: the noop is still to run
        fn.run_slice()
        # Nothing left to run: the master hears of both at once (it may give more work).
        results = [entry for _, body, _ in sent for entry in body["results"]]
        assert [entry[:3] for entry in results] == [[1, True, 0], [2, True, 0]]
        assert results[0][3] >= 0.05 and 0 <= results[1][3] < 0.05
    finally:
        fn.close()
        pull.close(0)


def test_tasks_not_started_are_given_back(reactor: Reactor) -> None:
    fn = runner(reactor, allow_pickle=False)
    sent = to_master(fn)
    try:
        for key in (1, 2, 3):
            fn.queue.append((key, "zdf.jobs.examples:noop", pack([[], {}]), "", key, None, key))
        fn.on_steal(Call(fn.channel, None, P.FN_STEAL, 0, {"keys": [2, 3, 9], "ref": 5}))
        assert sent[-1][0] == P.FN_STOLEN and sent[-1][1] == {"keys": [2, 3], "ref": 5}
        assert [task[0] for task in fn.queue] == [1]
    finally:
        fn.close()


def test_tasks_come_straight_from_clients_only_under_a_lease_it_holds(reactor: Reactor) -> None:
    pull = make_socket(zmq.PULL, bind="tcp://127.0.0.1:*")
    reply = pull.getsockopt_string(zmq.LAST_ENDPOINT) + "#tk"
    fn = runner(reactor, allow_pickle=False)
    reports = to_master(fn)
    client = make_socket(zmq.DEALER, connect=fn.direct_addr)

    def send(lease: str, tid: int) -> Any:
        args = pack([[tid], {}])
        body = {"tasks": [[tid, "zdf.jobs.examples:square", 0, len(args)]], "reply": reply}
        client.send_multipart([encode(Kind.EVENT, P.FN_DIRECT, 0, {**body, "lease": lease}), *args])
        deadline = time.monotonic() + 5
        while not pull.poll(0):
            assert time.monotonic() < deadline, "no answer from the worker"
            reactor.run_once(0.01)
        parts = pull.recv_multipart()
        return decode(parts[0]), parts[1:]

    try:
        msg, _ = send("nope", 7)
        assert msg.op == P.FN_REFUSED and msg.body == {"tids": [7], "token": "tk"}
        fn.on_lease(Call(fn.channel, None, P.FN_LEASE, 0, {"lease": "L1"}, [], True))
        msg, frames = send("L1", 8)
        assert msg.op == P.FN_RESULT and msg.body["results"] == [[8, True, 1]]
        assert unpack(frames) == 64
        deadline = time.monotonic() + 5
        while not reports:  # the master hears of it as a count, a little later
            assert time.monotonic() < deadline
            reactor.run_once(0.01)
        assert [body for _, body, _ in reports] == [{"results": [], "direct": 1}]
        fn.on_revoke(Call(fn.channel, None, P.FN_REVOKE, 0, {"lease": "L1"}, [], True))
        msg, _ = send("L1", 9)
        assert msg.op == P.FN_REFUSED and msg.body["tids"] == [9]
    finally:
        client.close(0)
        fn.close()
        pull.close(0)


def test_a_client_naming_ever_new_result_addresses_cannot_exhaust_sockets(
    reactor: Reactor,
) -> None:
    """Each refused task under a lease is answered on the address it names: the worker
    keeps at most ``MAX_REPLY_SOCKETS`` of those sockets open (1,100 used to break it)."""
    from zdf.executor.fnrunner import MAX_REPLY_SOCKETS

    fn = runner(reactor, allow_pickle=False)
    try:
        for i in range(MAX_REPLY_SOCKETS + 50):
            body = {"reply": f"tcp://127.0.0.1:{20000 + i}#t", "lease": "none", "tasks": []}
            fn.on_direct(Call(fn.direct, b"c", P.FN_DIRECT, 0, body, [], True))
        assert len(fn.replies) == MAX_REPLY_SOCKETS
    finally:
        fn.close()


def test_a_task_under_a_lease_obeys_the_masters_allow_pickle(reactor: Reactor) -> None:
    blob = cloudpickle.dumps(lambda: 1)
    fn = runner(reactor, allow_pickle=True)  # the executor allows pickles, the master not
    try:
        fn.leases["L"] = None
        sent: list[tuple[str, Any, list[Any]]] = []
        fn._send_to_client = lambda reply, op, body, frames: sent.append((op, body, frames))  # type: ignore[method-assign]
        frames = [blob, *pack([[], {}])]
        task = [1, P.PICKLED_FN, 0, len(frames)]
        body = {"reply": "tcp://127.0.0.1:9#t", "lease": "L", "tasks": [task]}
        fn.on_direct(Call(fn.direct, b"c", P.FN_DIRECT, 0, body, frames, True))
        fn._after_read()  # what the channel does once it has read what was waiting
        ((_op, header, out),) = [s for s in sent if s[0] == P.FN_RESULT]
        assert header["results"][0][1] is False  # not run
        assert "master" in unpack(out)["message"]
    finally:
        fn.close()


def test_a_task_given_back_and_sent_again_waits_for_all_its_inputs(reactor: Reactor) -> None:
    """Fetches of its first stay were still under way: their answers must not count for
    the second (it ran once with an input missing: None)."""
    fn = runner(reactor, allow_pickle=False)
    to_master(fn)
    fetches: dict[Any, Any] = {}
    fn.fetcher.fetch = lambda key, addrs, nbytes, done: fetches.setdefault(key, done)  # type: ignore[method-assign]
    entry = [5, "zdf.jobs.examples:add", 1, "", 9, [["a", ["tcp://x"], 8], ["b", ["tcp://y"], 8]]]
    frames = pack([[0, 0], {}])

    def run() -> None:
        fn.on_run(Call(fn.channel, None, P.FN_RUN, 0, {"tasks": [entry]}, frames, True))

    try:
        run()
        fn.on_steal(Call(fn.channel, None, P.FN_STEAL, 0, {"keys": [5]}, [], True))
        run()  # placed here again while the first fetches go on
        fetches["a"](1.0, None)
        assert not fn.queue and fn.waiting[5].missing == 1
        fetches["b"](2.0, None)
        assert len(fn.queue) == 1 and fn.queue[0][5] == [1.0, 2.0]
    finally:
        fn.close()


def test_a_runner_with_a_spill_dir_spills_and_says_it_is_over(
    reactor: Reactor, tmp_path: Path
) -> None:
    spill = tmp_path / "spill" / "w0"
    fn = FunctionRunner(
        reactor,
        f"127.0.0.1:{free_port()}",
        "exec-1",
        "w0",
        memory_limit=1 << 20,
        spill_dir=str(spill),
    )
    try:
        sent = to_master(fn)
        # A result above the store's target goes to disk at once, under its master key.
        fn.queue.append((5, "zdf.jobs.examples:block", pack([[0], {}]), "", 5, None, 5))
        fn.run_slice()
        assert fn.store.is_spilled(5) and len(os.listdir(spill)) == 1
        assert fn.store[5][-1] == (1 << 20) // 8 - 1
        # Above the pause fraction of 1 MiB (this process alone holds more): over.
        done = [body for op, body, _ in sent if op == P.FN_DONE]
        assert done and done[-1]["over"] is True
    finally:
        fn.close()
    assert os.listdir(spill) == []  # the store's files went with the runner


def ref(index: int) -> Any:
    """What a client puts in a task's arguments for its input ``index``."""
    return msgpack.ExtType(REF_EXT, msgpack.packb(index))


def run_entries(fn: FunctionRunner, entries: list[list[Any]], frames: list[Any]) -> None:
    fn.on_run(Call(fn.channel, None, P.FN_RUN, 0, {"tasks": entries}, frames, True))


def test_a_task_sent_ahead_runs_as_soon_as_its_input_is_made_here(reactor: Reactor) -> None:
    fn = runner(reactor, allow_pickle=False)
    sent = to_master(fn)
    try:
        first = pack([[1, 2], {}])
        second = pack([[ref(0), 10], {}])  # add(<the result of task 1>, 10)
        run_entries(
            fn,
            [
                [1, "zdf.jobs.examples:add", 1, "", 1],
                [2, "zdf.jobs.examples:add", 1, "", 2, [[1, None, 0]]],  # not made yet
            ],
            first + second,
        )
        assert 2 in fn.waiting and fn.awaiting == {1: [(2, fn.waiting[2], 0)]}
        fn.run_slice()  # 1 runs, and 2 right after it, in the same slice
        results = [entry for _, body, _ in sent for entry in body["results"]]
        assert [entry[0] for entry in results] == [1, 2]
        assert fn.store[2] == 13 and not fn.waiting and not fn.awaiting
    finally:
        fn.close()


def test_an_input_queued_here_under_a_lease_is_awaited_not_fetched(reactor: Reactor) -> None:
    """A task under a lease comes straight from its client; a task taking its result comes
    through the master, which names this worker as the holder: if it arrives while the
    leased task is still queued here, it waits for it (a fetch found nothing and the
    input was reported lost, failing the task with WorkerLost)."""
    fn = runner(reactor, allow_pickle=False)
    sent = to_master(fn)
    fetches: list[Any] = []
    fn.fetcher.fetch = lambda key, addrs, nbytes, done: fetches.append(key)  # type: ignore[method-assign]
    try:
        fn.queue.append((DIRECT, "zdf.jobs.examples:add", pack([[1, 2], {}]), "", 4, None, "L:4"))
        run_entries(
            fn,
            [[2, "zdf.jobs.examples:add", 1, "", 5, [["L:4", [fn.store_server.addr], 8]]]],
            pack([[ref(0), 10], {}]),
        )
        assert not fetches and 2 in fn.waiting
        fn.run_slice()
        assert fn.store[2] == 13 and not fn.waiting and not fetches
        assert not [body for op, body, _ in sent if op == P.FN_STOLEN]
    finally:
        fn.close()


def test_an_input_made_elsewhere_is_fetched_when_the_master_says_where(
    reactor: Reactor,
) -> None:
    fn = runner(reactor, allow_pickle=False)
    to_master(fn)
    fetches: dict[Any, Any] = {}
    fn.fetcher.fetch = lambda key, addrs, nbytes, done: fetches.setdefault(key, (addrs, done))  # type: ignore[method-assign]
    try:
        run_entries(
            fn, [[5, "zdf.jobs.examples:add", 1, "", 9, [[7, None, 0]]]], pack([[ref(0), 1], {}])
        )
        assert not fetches and not fn.queue
        ready = {"inputs": [[7, ["tcp://127.0.0.1:1"], 8], [99, ["tcp://127.0.0.1:2"], 8]]}
        fn.on_ready(Call(fn.channel, None, P.FN_READY, 0, ready, [], True))
        assert list(fetches) == [7] and fetches[7][0] == ["tcp://127.0.0.1:1"]  # 99: not wanted
        fetches[7][1](41, None)
        assert len(fn.queue) == 1 and fn.queue[0][5] == [41]
    finally:
        fn.close()


def test_tasks_sent_ahead_are_forgotten_and_a_rejoin_drops_them(reactor: Reactor) -> None:
    fn = runner(reactor, allow_pickle=False)
    to_master(fn)
    fetches: dict[Any, Any] = {}
    fn.fetcher.fetch = lambda key, addrs, nbytes, done: fetches.setdefault(key, done)  # type: ignore[method-assign]
    frames = pack([[ref(0), 1], {}])
    try:
        run_entries(fn, [[5, "zdf.jobs.examples:add", 1, "", 9, [[7, None, 0]]]], frames)
        fn.store[5] = "a result it made before the master failed it"
        fn.on_forget(Call(fn.channel, None, P.FN_FORGET, 0, {"keys": [5]}, [], True))
        assert not fn.waiting and not fn.awaiting and 5 not in fn.store
        run_entries(fn, [[6, "zdf.jobs.examples:add", 1, "", 10, [[8, None, 0]]]], frames)
        fn.rejoin()  # a new master (or the same, restarted): it knows nothing of task 6
        assert not fn.waiting and not fn.awaiting
        ready = {"inputs": [[8, ["tcp://127.0.0.1:1"], 8]]}
        fn.on_ready(Call(fn.channel, None, P.FN_READY, 0, ready, [], True))
        assert not fetches and not fn.queue  # a late note of the old master: nothing runs
    finally:
        fn.close()
