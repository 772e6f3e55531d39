"""Is any master there? A round of pings to every known master, each on its own socket.

Theory of operation. The executor's own channel talks to one master at a time, and a
registration to a master that is gone waits for its whole timeout before the next is
tried. To tell "cut off from every master" from "the leader died and a standby is
about to take over" within the keepalive TTL, the executor starts a ``round`` when the
masters have been silent for half of it: a ``ping`` to every master it knows, over a
fresh DEALER each (a half-open connection of the main channel cannot delay it), with
the other half of the TTL as deadline.

A sign of life is either the ping's answer or the ZeroMQ handshake of that fresh
connection (``EVENT_HANDSHAKE_SUCCEEDED`` on a socket monitor): the handshake is done
by the master's ZeroMQ I/O thread, so a master whose own loop is stalled (waiting on a
metastore that is electing a new leader) still shows that it is there and reachable,
while across a partition nothing comes back. Any sign from any master calls
``on_answer``; a round without one is ``unanswered``. Sockets close at the end of the
round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zdf import protocol as P
from zdf.errors import ZdfError
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import Channel
from zdf.wire.sockets import close_socket, make_socket


class MasterProbe:
    def __init__(self, reactor: Reactor, on_answer: Callable[[], None]) -> None:
        self.reactor = reactor
        self.on_answer = on_answer
        self.unanswered = False  # the last finished round: nobody answered
        self._channels: list[Channel] = []
        self._monitors: list[zmq.Socket[bytes]] = []
        self._timer: Timer | None = None
        self._answered = False

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self, masters: list[str], timeout: float) -> None:
        """Probe every master in ``masters``; no-op while a round is running."""
        if self.running or not masters:
            return
        self._answered = self.unanswered = False  # only a finished round tells
        for addr in masters:
            sock = make_socket(zmq.DEALER, server_role="master")
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            self._monitors.append(monitor)
            self.reactor.add_reader(monitor, functools.partial(self._on_event, monitor))
            sock.connect(f"tcp://{addr}" if "://" not in addr else addr)
            channel = Channel(self.reactor, sock, {}, name="probe")
            self._channels.append(channel)
            channel.request(P.PING, {}, timeout=timeout, callback=self._on_reply)
        self._timer = self.reactor.call_later(timeout, self._end)

    def reset(self) -> None:
        """A master was heard some other way: forget an unanswered round."""
        self.unanswered = False

    def _on_event(self, monitor: zmq.Socket[bytes]) -> None:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except zmq.ZMQError:
            return
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._heard()

    def _on_reply(self, result: Any, error: ZdfError | None) -> None:
        if error is None:  # not a timeout, nor a send refused for a full queue
            self._heard()

    def _heard(self) -> None:
        self._answered = True
        if self.running:
            self.reactor.call_later(0, self._end)  # one sign is enough: end the round
        self.on_answer()

    def _end(self) -> None:
        if self._timer is None:
            return
        self._timer.cancel()
        self._timer = None
        self.unanswered = not self._answered
        self._close()

    def _close(self) -> None:
        # Monitoring stops before its reading end closes: libzmq's I/O thread would
        # otherwise block sending an event to a monitor nobody reads, and stall every
        # socket of this process.
        for channel in self._channels:
            try:
                channel.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            channel.close()
        for monitor in self._monitors:
            self.reactor.remove_reader(monitor)
            close_socket(monitor)
        self._monitors.clear()
        self._channels.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()
