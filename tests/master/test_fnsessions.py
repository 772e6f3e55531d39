"""Clients' sessions on their own: a client gone (silent for the grace, or said bye) has
its results dropped; one heard within the grace keeps them."""

from __future__ import annotations

from typing import Any

from tests.master.test_fndeps import finish, setup, submit
from tests.master.test_fnqueue import CLIENT, FakeChannel, call
from zdf import protocol as P
from zdf.master.fnqueue import FunctionQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clock(grace: float = 10.0) -> tuple[FakeChannel, FunctionQueue, list[bytes], Clock]:
    channel, queue, peers = setup()
    clock = Clock()
    queue.sessions.clock = clock
    queue.sessions.grace = grace
    queue.sessions._checked = clock.now
    return channel, queue, peers, clock


def drops(channel: FakeChannel) -> list[tuple[Any, bytes | None]]:
    return [(body, peer) for body, peer, _ in channel.of(P.FN_DROP)]


def test_a_silent_client_loses_its_results_after_the_grace_not_before() -> None:
    channel, queue, _, clock = with_clock(grace=10.0)
    answer = queue.on_client(call(P.FN_CLIENT, {}, CLIENT))
    assert answer["keepalive"] == queue.sessions.keepalive < 10.0
    submit(queue, 1)
    submit(queue, 2)
    holder = finish(queue, 1, nbytes=1 << 20)
    clock.now += 9.0
    queue.sessions.expire()
    assert drops(channel) == []  # within the grace: kept
    queue.sessions.heard(CLIENT)  # any message counts
    clock.now += 9.0
    queue.sessions.expire()
    assert drops(channel) == [] and (CLIENT, 1) in queue.deps.done
    clock.now += 2.0  # 11 s silent: gone
    queue.sessions.expire()
    assert drops(channel) == [({"keys": [1]}, holder)]
    assert (CLIENT, 1) not in queue.deps.done and queue.sessions.gone == 1
    # Its task still running is dropped once made.
    other = finish(queue, 2)
    assert ({"keys": [2]}, other) in drops(channel)
    assert queue.deps.done == {}


def test_a_client_that_says_bye_loses_its_results_at_once_and_its_leases_too() -> None:
    channel, queue, _, _ = with_clock()
    queue.on_client(call(P.FN_CLIENT, {}, CLIENT))
    for i, w in enumerate(queue.workers.values()):
        w.direct = f"tcp://127.0.0.1:{9100 + i}"
    lease = queue.leases.grant(CLIENT, queue.workers.values(), lambda _e: True)
    assert lease is not None
    worker = queue.leases.holders[lease][1]
    submit(queue, 1)
    holder = finish(queue, 1)
    other = b"c-2"
    queue.on_client(call(P.FN_CLIENT, {}, other))
    queue.sessions.on_bye(call(P.FN_BYE, {}, CLIENT))
    assert ({"keys": [1]}, holder) in drops(channel)
    assert ({"keys": [], "leases": [lease]}, worker) in drops(channel)
    assert lease not in queue.leases.holders  # ended at its worker
    assert other in queue.sessions.last and CLIENT not in queue.sessions.last


def test_a_client_never_known_is_never_taken_as_gone() -> None:
    channel, queue, _, clock = with_clock(grace=1.0)
    submit(queue, 1)  # no fn_client, no fn_alive: an older client
    finish(queue, 1)
    clock.now += 100.0
    queue.sessions.expire()
    assert drops(channel) == [] and (CLIENT, 1) in queue.deps.done
    queue.sessions.on_alive(call(P.FN_ALIVE, {}, CLIENT))  # known from now on
    clock.now += 2.0
    queue.sessions.expire()
    assert len(drops(channel)) == 1
