"""Calls of one turn as one message (``zdf.wire.batchcall``, ``zdf.wire.turnbatch``):
fewer messages, and each call keeps its own outcome."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from zdf.errors import JobError, PermissionDenied, ProtocolError, Timeout, ZdfError
from zdf.wire import DEFER, Call, Channel, Reactor, make_socket
from zdf.wire.batchcall import BATCH, BatchedCall, CallBatcher, serve_batch
from zdf.wire.turnbatch import TurnBatch

pytestmark = pytest.mark.timeout(30)


class Pair:
    """A ROUTER that serves ``echo``/``refuse``/``later`` and batches, and a DEALER to it."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.batches = 0
        self.seen: list[str] = []
        self.deferred: list[Call] = []
        handlers = {
            "echo": self.echo,
            "refuse": self.refuse,
            "later": self.later,
            BATCH: self.batch,
        }
        router = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
        addr = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.server = Channel(reactor, router, handlers, name="server")
        self.client = Channel(reactor, make_socket(zmq.DEALER, connect=addr), {}, name="client")
        self.calls = CallBatcher(reactor, lambda: self.client)

    def echo(self, call: Call) -> Any:
        self.seen.append(call.op)
        return call.body

    def refuse(self, call: Call) -> Any:
        self.seen.append(call.op)
        raise JobError(f"refused {call.body}")

    def later(self, call: Call) -> Any:
        self.seen.append(call.op)
        self.deferred.append(call)
        return DEFER

    def batch(self, call: Call) -> Any:
        self.batches += 1
        return serve_batch(call)

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture
def pair(reactor: Reactor) -> Iterator[Pair]:
    p = Pair(reactor)
    try:
        yield p
    finally:
        p.close()


def run_until(reactor: Reactor, cond: Any, timeout: float = 10.0) -> None:
    reactor.run(until=cond, deadline=time.monotonic() + timeout)
    assert cond()


def test_a_turns_items_go_per_key_in_order_at_the_next_turn(reactor: Reactor) -> None:
    sent: list[tuple[str, list[int]]] = []
    batch: TurnBatch[str, int] = TurnBatch(reactor, lambda k, items: sent.append((k, items)), 3)
    for i in range(5):
        batch.add("a", i)
    batch.add("b", 9)
    assert sent == [] and len(batch) == 6  # nothing before the turn ends
    run_until(reactor, lambda: len(sent) == 3)
    assert sent == [("a", [0, 1, 2]), ("a", [3, 4]), ("b", [9])]  # bounded, in order
    assert batch.messages == 3 and len(batch) == 0


def test_each_call_of_a_batch_gets_its_own_outcome(pair: Pair) -> None:
    outcomes: dict[int, tuple[Any, ZdfError | None]] = {}

    def keep(i: int) -> Any:
        return lambda result, error: outcomes.__setitem__(i, (result, error))

    pair.calls.request("echo", {"n": 0}, timeout=5, callback=keep(0))
    pair.calls.request("refuse", 1, timeout=5, callback=keep(1))
    pair.calls.request("later", 2, timeout=5, callback=keep(2))
    pair.calls.notify("echo", {"n": 3})  # wants no answer, rides along
    pair.calls.request("nope", 4, timeout=5, callback=keep(4))
    run_until(pair.reactor, lambda: len(pair.deferred) == 1)
    assert outcomes == {}  # the batch answers once every call has
    pair.deferred[0].reply("done later")
    run_until(pair.reactor, lambda: len(outcomes) == 4)
    assert pair.batches == 1 and pair.calls.messages == 1  # one message each way
    assert pair.seen == ["echo", "refuse", "later", "echo"]  # served in order
    assert outcomes[0] == ({"n": 0}, None)
    assert isinstance(outcomes[1][1], JobError) and "refused 1" in str(outcomes[1][1])
    assert outcomes[2] == ("done later", None)
    assert isinstance(outcomes[4][1], ProtocolError)  # an unknown op, alone


def test_a_batch_of_events_is_served_and_answered_by_no_one(pair: Pair) -> None:
    for i in range(3):
        pair.calls.notify("echo", i)
    run_until(pair.reactor, lambda: len(pair.seen) == 3)
    assert pair.batches == 1 and pair.client.stats["stray_reply"] == 0


def test_a_batch_that_fails_whole_fails_every_call_in_it(pair: Pair) -> None:
    errors: list[ZdfError | None] = []
    for i in range(3):
        pair.calls.request("later", i, timeout=0.2, callback=lambda r, e: errors.append(e))
    run_until(pair.reactor, lambda: len(errors) == 3)
    assert all(isinstance(e, Timeout) for e in errors)  # each sender's retry rule applies


@pytest.mark.parametrize(
    "calls",
    [
        [["echo", 1], "not a pair"],
        [["echo", 1], [BATCH, {"calls": [["echo", 2]]}]],  # no batch in a batch
        [],
    ],
)
def test_a_batch_that_cannot_be_read_whole_serves_none_of_its_calls(
    pair: Pair, calls: list[Any]
) -> None:
    with pytest.raises(ProtocolError):
        serve_batch(Call(pair.server, b"peer", BATCH, 1, {"calls": calls}))
    assert pair.seen == []


def test_every_call_of_a_batch_is_checked_against_the_callers_role(pair: Pair) -> None:
    pair.server.roles = {BATCH: frozenset({"client"}), "echo": frozenset({"executor"})}
    answers: list[tuple[bool, Any]] = []
    outer = BatchedCall(pair.server, b"peer", BATCH, 0, {"calls": [["echo", 1]]})
    outer.role = "client"
    outer.answer = lambda ok, value: answers.append((ok, value))
    assert serve_batch(outer) is DEFER
    [(ok, reply)] = answers
    [[call_ok, error]] = reply["results"]
    assert ok and not call_ok and error["type"] == PermissionDenied.__name__
    assert pair.seen == []
