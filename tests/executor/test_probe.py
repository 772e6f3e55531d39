"""The executor's probe: any master answering is a sign of life; a round in which
none answers (gone, or cut off) is what lets a cut-off executor stop its tasks."""

from __future__ import annotations

import time

import zmq

from zdf import protocol as P
from zdf.executor.probe import MasterProbe
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Channel
from zdf.wire.sockets import free_port, make_socket


def run_round(reactor: Reactor, probe: MasterProbe, masters: list[str]) -> None:
    probe.start(masters, timeout=0.3)
    assert probe.running
    reactor.run(until=lambda: not probe.running, deadline=time.monotonic() + 5)
    assert not probe.running


def test_one_answering_master_is_enough() -> None:
    reactor = Reactor()
    addr = f"127.0.0.1:{free_port()}"
    standby = Channel(
        reactor, make_socket(zmq.ROUTER, bind=addr), {P.PING: lambda call: {"leading": False}}
    )
    heard: list[bool] = []
    probe = MasterProbe(reactor, lambda: heard.append(True))
    try:
        run_round(reactor, probe, [f"127.0.0.1:{free_port()}", addr])  # one gone, one there
        assert heard == [True] and not probe.unanswered
    finally:
        probe.close()
        standby.close()


def test_a_master_whose_loop_is_stalled_still_shows_it_is_there() -> None:
    """Nobody reads its socket (a master blocked on the metastore): the handshake,
    done by its ZeroMQ I/O thread, is the sign of life."""
    reactor = Reactor()
    addr = f"127.0.0.1:{free_port()}"
    stalled = make_socket(zmq.ROUTER, bind=addr)  # bound, never read
    heard: list[bool] = []
    probe = MasterProbe(reactor, lambda: heard.append(True))
    try:
        run_round(reactor, probe, [addr])
        assert heard and not probe.unanswered
    finally:
        probe.close()
        stalled.close(0)


def test_a_round_nobody_answers() -> None:
    reactor = Reactor()
    heard: list[bool] = []
    probe = MasterProbe(reactor, lambda: heard.append(True))
    try:
        started = time.monotonic()
        run_round(reactor, probe, [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
        assert probe.unanswered and not heard
        assert time.monotonic() - started < 2.0  # the round's own deadline, not longer
        probe.start([f"127.0.0.1:{free_port()}"], timeout=0.3)
        assert not probe.unanswered  # a new round forgets the last until it ends
        probe.reset()
    finally:
        probe.close()
