"""Clients' sessions: the results of a client that is gone are dropped from the workers.

Theory of operation. Results stay on the workers while a client's future may
use them (``zdf.master.fndeps``): a client releases them future by future. A
client that closes says so (``fn_bye``); one that vanishes (killed, its host
gone, a notebook kernel restarted) says nothing, so the master keeps a clock
per client: a client is *known* from its ``fn_client`` (its connection's first
word) or its first ``fn_alive``, and while open it sends ``fn_alive`` every
``keepalive`` seconds (the ``fn_client`` answer names the interval: the grace
over ``KEEPALIVES_PER_GRACE``); any other message from it counts as well
(``heard``, from the master's traffic hook). A known client not heard from for
``client-grace`` seconds is gone (``expire``, checked every ``CHECK_INTERVAL``
at most), as is one that said ``fn_bye``: everything it may still use is
released as if it had released each future itself (``Dependencies.release_all``):
values no pending task takes are dropped from their workers at once, the others
once those tasks end; its queued tasks still run and their values are dropped
once made; its leases end, and the values its tasks made under any lease it
held are dropped by their workers (``fn_drop`` with ``leases``).

Within the grace, a client that comes back (a network blip, a paused process,
ZeroMQ reconnecting with the same identity) keeps everything: nothing is dropped
before the grace has run out. A master that takes over knows no client until it
hears from it, and a client that never sends ``fn_alive`` (an older one) is
never taken as gone, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zdf import protocol as P
from zdf.wire.rpc import Call

if TYPE_CHECKING:
    from zdf.master.fnqueue import FunctionQueue

log = logging.getLogger(__name__)

DEFAULT_GRACE = 30.0  # the master's ``client-grace``
KEEPALIVES_PER_GRACE = 6  # a client sends this many keepalives within one grace
CHECK_INTERVAL = 1.0  # the longest between two looks for clients gone
MAX_LEASES_REMEMBERED = 64  # per client: leases whose values are dropped when it goes


class ClientSessions:
    def __init__(
        self,
        queue: FunctionQueue,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.q = queue
        self.grace = grace
        self.clock = clock
        self.last: dict[bytes, float] = {}  # known client: when it was last heard
        self.leases: dict[bytes, dict[str, bytes]] = {}  # client: {lease: worker peer}
        self.gone = 0  # clients taken as gone so far (silent or said bye)
        self._checked = clock()
        queue.leases.on_grant = self.leased

    @property
    def keepalive(self) -> float:
        return self.grace / KEEPALIVES_PER_GRACE

    @property
    def check_interval(self) -> float:
        """How often the master calls ``expire``."""
        return min(CHECK_INTERVAL, self.keepalive)

    def handlers(self) -> dict[str, Callable[[Call], Any]]:
        return {P.FN_ALIVE: self.on_alive, P.FN_BYE: self.on_bye}

    def hello(self, client: bytes) -> dict[str, Any]:
        """``fn_client``: the client is known from now on; what its answer adds."""
        self.last[client] = self.clock()
        return {"keepalive": self.keepalive}

    def on_alive(self, call: Call) -> Any:
        if call.peer is not None:
            self.last[call.peer] = self.clock()
        self.expire()
        return None

    def on_bye(self, call: Call) -> Any:
        if call.peer is not None:
            self.forget(call.peer, "closed")
        return {"bye": True}

    def heard(self, peer: bytes | None) -> None:
        """Any message from ``peer``: a known client's clock starts again."""
        if peer in self.last:
            self.last[peer] = self.clock()

    def leased(self, client: bytes, lease: str, worker: bytes) -> None:
        """``client`` was granted ``lease`` on ``worker``: what it makes there is its."""
        held = self.leases.setdefault(client, {})
        held[lease] = worker
        while len(held) > MAX_LEASES_REMEMBERED:
            del held[next(iter(held))]

    def expire(self) -> None:
        """Take the clients silent for the grace as gone (looked at most twice every
        ``check_interval``)."""
        now = self.clock()
        if now - self._checked < self.check_interval / 2:
            return
        self._checked = now
        silent = [c for c, heard in self.last.items() if now - heard > self.grace]
        for client in silent:
            self.forget(client, f"silent for {now - self.last[client]:.1f}s")

    def forget(self, client: bytes, why: str) -> None:
        """``client`` is gone: release everything it may still use."""
        self.last.pop(client, None)
        released = self.q.deps.release_all(client)
        lease = self.q.leases.of_client.get(client)
        if lease is not None:
            self.q.leases.end(lease)
        drops: dict[bytes, list[str]] = {}
        for old, worker in self.leases.pop(client, {}).items():
            drops.setdefault(worker, []).append(old)
        for worker, leases in drops.items():
            if worker in self.q.workers:
                self.q.channel.notify(P.FN_DROP, {"keys": [], "leases": leases}, peer=worker)
        self.gone += 1
        if released or drops:
            log.info(
                "client %s gone (%s): %d results released, values of %d leases dropped",
                client.hex()[:12],
                why,
                released,
                sum(map(len, drops.values())),
            )
