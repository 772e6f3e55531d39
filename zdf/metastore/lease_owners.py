"""Leases per client: how many live leases each client of the leading replica holds.

Theory of operation. A *client* is one connection to the metastore: the
routing id the leader's ROUTER gives it (``Call.peer``), the same notion the
master uses for function tasks queued per client. With CURVE every member of a
role shares the role's keys, so the key names a role, not a client; the
connection is what tells two clients apart. (A client that reconnects is a new
client: the total ``max-leases`` stays the backstop against many connections.)

Only the leader grants leases, so only the leader counts them: a grant is
counted against its client from the moment it is proposed (``granting``), and
once applied, against the lease id it got (``granted``). A lease stops counting
when it is gone from the state (revoked or expired); each client's leases are
checked against the state when it asks for another (``check``), and every
client's on a timer (``sweep``), so a client that went away is forgotten.
Counts are the leader's memory, not replicated: leases granted before a leader
change count against nobody on the new leader.

Masters (and metastore peers) are not counted: a master holds one lease per
executor. Unauthenticated callers (protected mode, no roles) are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container

from zdf.errors import LimitExceeded
from zdf.metastore.access import MASTER

DEFAULT_MAX_LEASES_PER_CLIENT = 1000


class LeaseOwners:
    def __init__(self, limit: int = DEFAULT_MAX_LEASES_PER_CLIENT) -> None:
        self.limit = limit
        self.of_client: dict[bytes, set[int]] = {}
        self.pending: Counter[bytes] = Counter()

    def check(self, role: str | None, client: bytes | None, live: Container[int]) -> None:
        """``LimitExceeded`` if ``client`` already holds ``limit`` live leases."""
        if role in MASTER or client is None:
            return
        held = self.of_client.get(client)
        if held:
            held.intersection_update([lease for lease in held if lease in live])
        count = len(held or ()) + self.pending[client]
        if count >= self.limit:
            raise LimitExceeded(
                f"this client holds {count} live leases, the limit is {self.limit} "
                "(max-leases-per-client); revoke some or let them expire"
            )

    def granting(self, role: str | None, client: bytes | None) -> Callable[[object], None]:
        """Count a grant being proposed; call the result with the grant's result."""
        if role in MASTER or client is None:
            return _nothing
        self.pending[client] += 1

        def granted(result: object) -> None:
            self.pending[client] -= 1
            if self.pending[client] <= 0:
                del self.pending[client]
            if isinstance(result, dict) and isinstance(result.get("id"), int):
                self.of_client.setdefault(client, set()).add(result["id"])

        return granted

    def sweep(self, live: Container[int]) -> None:
        """Forget leases that are gone, and clients that hold none."""
        for client in list(self.of_client):
            held = {lease for lease in self.of_client[client] if lease in live}
            if held:
                self.of_client[client] = held
            else:
                del self.of_client[client]

    def held(self, client: bytes) -> int:
        return len(self.of_client.get(client, ()))


def _nothing(result: object) -> None:
    pass
