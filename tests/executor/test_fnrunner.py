"""The worker's function runner on its own (no cluster): pickles, errors, direct results."""

from __future__ import annotations

from collections.abc import Iterator

import cloudpickle
import pytest
import zmq

from zdf import protocol as P
from zdf.executor.fnrunner import FunctionRunner
from zdf.wire.codec import decode
from zdf.wire.payload import pack, unpack
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import free_port, make_socket

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    try:
        yield loop
    finally:
        loop.close()


def runner(reactor: Reactor, allow_pickle: bool) -> FunctionRunner:
    # Nobody listens at the master address: hello requests just go unanswered.
    return FunctionRunner(reactor, f"127.0.0.1:{free_port()}", "exec-1", "w0", allow_pickle)


def test_pickled_function_runs_only_where_allowed(reactor: Reactor) -> None:
    offset = 10
    blob = cloudpickle.dumps(lambda x: x + offset)
    refusing = runner(reactor, allow_pickle=False)
    try:
        ok, frames = refusing._run_one(P.PICKLED_FN, [blob, *pack([[1], {}])])
        assert not ok
        error = unpack(frames)
        assert error["type"] == "PermissionError" and "allow-pickle" in error["message"]
    finally:
        refusing.close()
    allowing = runner(reactor, allow_pickle=True)
    try:
        assert allowing._run_one(P.PICKLED_FN, [blob, *pack([[1], {}])]) == (True, pack(11))
        assert allowing._run_one(P.PICKLED_FN, [blob, *pack([[2], {}])]) == (True, pack(12))
    finally:
        allowing.close()


def test_results_go_straight_to_the_clients_address(reactor: Reactor) -> None:
    pull = make_socket(zmq.PULL, bind="tcp://127.0.0.1:*")
    reply = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    fn = runner(reactor, allow_pickle=False)
    try:
        fn.queue.append((1, "zdf.jobs.examples:square", pack([[6], {}]), reply + "#t0k", 41))
        fn.queue.append((2, "zdf.jobs.examples:fail", pack([["no"], {}]), reply + "#t0k", 42))
        fn.run_slice()
        assert pull.poll(5000)
        parts = pull.recv_multipart()
        msg = decode(parts[0])
        assert msg.op == P.FN_RESULT and msg.body["token"] == "t0k"
        assert [r[:2] for r in msg.body["results"]] == [[41, True], [42, False]]
        assert unpack(parts[1:2]) == 36
        assert unpack(parts[2:])["type"] == "RuntimeError"
    finally:
        fn.close()
        pull.close(0)
