"""Is any master there? A round of pings to every known master, each on its own socket.

Theory of operation. The executor's own channel talks to one master at a time, and a
registration to a master that is gone waits for its whole timeout before the next is
tried. To tell "cut off from every master" from "the leader died and a standby is
about to take over" within the keepalive TTL, the executor starts a ``round`` when the
masters have been silent for half of it: a ``ping`` to every master it knows, over a
fresh DEALER each (a half-open connection of the main channel cannot delay it), with
the other half of the TTL as deadline. Any answer -- a standby's included -- is a sign
of life (``on_answer``); a round in which none came back is ``unanswered``. The
sockets close when their answer or deadline comes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from zdf import protocol as P
from zdf.errors import ZdfError
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Channel
from zdf.wire.sockets import make_socket


class MasterProbe:
    def __init__(self, reactor: Reactor, on_answer: Callable[[], None]) -> None:
        self.reactor = reactor
        self.on_answer = on_answer
        self.unanswered = False  # the last finished round: nobody answered
        self._waiting: set[Channel] = set()
        self._answered = False

    @property
    def running(self) -> bool:
        return bool(self._waiting)

    def start(self, masters: list[str], timeout: float) -> None:
        """Ping every master in ``masters``; no-op while a round is running."""
        if self._waiting or not masters:
            return
        self._answered = self.unanswered = False  # only a finished round tells
        for addr in masters:
            channel = Channel(self.reactor, make_socket(zmq.DEALER, connect=addr), {}, name="probe")
            self._waiting.add(channel)

            def done(result: Any, error: ZdfError | None, channel: Channel = channel) -> None:
                self._done(channel, error)

            channel.request(P.PING, {}, timeout=timeout, callback=done)

    def reset(self) -> None:
        """A master was heard some other way: forget an unanswered round."""
        self.unanswered = False

    def _done(self, channel: Channel, error: ZdfError | None) -> None:
        self._waiting.discard(channel)
        self.reactor.call_later(0, channel.close)  # not from inside its own callback
        if error is None:  # not a timeout, nor a send refused for a full queue
            self._answered = True
            self.on_answer()
        if not self._waiting:
            self.unanswered = not self._answered

    def close(self) -> None:
        for channel in self._waiting:
            channel.close()
        self._waiting.clear()
