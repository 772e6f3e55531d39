"""Leases: which worker a client may send its lone tasks to without the master.

Theory of operation. A client that runs one task at a time (``submit(...)``
then ``result()``) pays for every hop of client -> master -> worker -> client.
So with such a task the client may ask for a lease (``fn_submit`` with
``lease``); the master, the only scheduler, picks a worker (the one with the
fewest leases, then the least work) and tells the worker and then the client
(``fn_lease``). From then on the client sends its lone tasks straight to that
worker (``fn_direct``), which answers the client as usual: two hops instead
of three. A client with many tasks in flight goes through the master's queue
as before, so bursts are still spread over every worker.

A lease ends when its worker dies (``worker_lost``): the master revokes it
(``fn_revoke``) at both ends, and the client submits the tasks it had sent
under it again, through the master, which retries them elsewhere. A worker
that gets a task under a lease it does not hold (one revoked meanwhile, or
granted by a master that is gone) refuses it (``fn_refused``) and the client
submits it through the master. A client holds one lease at a time; asking
again replaces it. A client that goes away keeps its lease until it is among
the oldest of ``MAX_LEASES``, which then makes room for a new one.

Leases obey the placement rule ("while any worker is idle, no task waits
behind another"): a lease goes only to a worker that holds no other client's
lease and runs no other client's tasks, and the master's queue uses leased
workers last; when it must place another client's task on one, the lease ends
first (``release``: ``fn_revoke`` with ``busy``, after which the client's tasks
sent under it are still answered, and its next lone task asks for a new lease).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from zdf import protocol as P
from zdf.wire.rpc import Channel

MAX_LEASES = 4096  # the oldest go first (see ``grant``)


class LeaseWorker(Protocol):
    peer: bytes
    executor_id: str
    direct: str
    inflight: set[int]
    load: float


class Leases:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.holders: dict[str, tuple[bytes, bytes]] = {}  # lease: (client, worker peer)
        self.of_client: dict[bytes, str] = {}
        # (client, lease, worker peer) of each lease granted (zdf.master.fnsessions)
        self.on_grant: Callable[[bytes, str, bytes], None] | None = None

    def grant(
        self,
        client: bytes,
        workers: Iterable[LeaseWorker],
        alive: Callable[[str], bool],
        free_for: Callable[[LeaseWorker], bool] = lambda _w: True,
    ) -> str | None:
        """Lease a worker to ``client`` (ending its previous lease); None if none fits.
        ``free_for(worker)``: the worker runs no other client's tasks."""
        lessees = {peer: c for c, peer in self.holders.values()}
        candidates = [
            w
            for w in workers
            if w.direct
            and alive(w.executor_id)
            and lessees.get(w.peer, client) == client
            and free_for(w)
        ]
        if not candidates:
            return None
        old = self.of_client.get(client)
        if old is not None:
            self._end(old, tell_client=False)
        while len(self.holders) >= MAX_LEASES:  # clients that left never give theirs back
            self._end(next(iter(self.holders)), tell_client=True)
        held = Counter(peer for _, peer in self.holders.values())
        worker = min(candidates, key=lambda w: (held[w.peer], w.load, len(w.inflight)))
        lease = os.urandom(8).hex()
        self.holders[lease] = (client, worker.peer)
        self.of_client[client] = lease
        if self.on_grant is not None:
            self.on_grant(client, lease, worker.peer)
        # The worker first: the client's first direct task must find the lease there.
        self.channel.notify(P.FN_LEASE, {"lease": lease}, peer=worker.peer)
        self.channel.notify(P.FN_LEASE, {"lease": lease, "addr": worker.direct}, peer=client)
        return lease

    def lessees(self) -> dict[bytes, set[bytes]]:
        """Worker peer -> the clients holding a lease on it."""
        out: dict[bytes, set[bytes]] = {}
        for client, peer in self.holders.values():
            out.setdefault(peer, set()).add(client)
        return out

    def release(self, peer: bytes, but: bytes = b"") -> None:
        """End the leases of every client but ``but`` on ``peer``: it gets queued work.
        Tasks already sent under them are answered as usual."""
        for lease in [k for k, (c, w) in self.holders.items() if w == peer and c != but]:
            client, _ = self.holders[lease]
            self._end(lease, tell_client=False)
            self.channel.notify(P.FN_REVOKE, {"lease": lease, "busy": True}, peer=client)

    def worker_gone(self, peer: bytes) -> None:
        """Revoke every lease on the worker ``peer`` (it died or said hello again)."""
        for lease in [k for k, (_, w) in self.holders.items() if w == peer]:
            self._end(lease, tell_client=True)

    def end(self, lease: str) -> None:
        """End ``lease`` at its worker (its client is gone)."""
        if lease in self.holders:
            self._end(lease, tell_client=False)

    def _end(self, lease: str, tell_client: bool) -> None:
        client, peer = self.holders.pop(lease)
        if self.of_client.get(client) == lease:
            del self.of_client[client]
        self.channel.notify(P.FN_REVOKE, {"lease": lease}, peer=peer)
        if tell_client:
            self.channel.notify(P.FN_REVOKE, {"lease": lease}, peer=client)

    def __len__(self) -> int:
        return len(self.holders)
