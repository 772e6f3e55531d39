"""Who may do what in the metastore, by the caller's CURVE role (``zdf.wire.security``).

Theory of operation. ``OPERATIONS`` is the role table the server's ``Channel``
checks before any handler runs: reads (get, range, watch, status) are open to
every role that holds the cluster's keys; writes to the roles that write at all.
A write is then checked key by key (``check_write``): the master owns the
framework, discovery and election keys (``/zdf/...``) and may write anywhere;
clients write under ``/app/`` only; metastore peers (a follower forwarding a
write) anywhere. A call without a role (no CURVE: protected mode, loopback
only) is not checked here.

Values, for everyone: a value written outside the framework's keys (``/zdf/``)
is at most ``max-meta-value-bytes`` (``check_values``); the framework's own
records are bounded by the master (spec pieces of at most half a MiB) and by
the state machine's ceiling, ``MAX_VALUE_BYTES``.

Leases, for everyone (secured or not): at most ``max_leases`` live leases, of
which the last ``MASTER_LEASE_RESERVE`` only a master may take (its election
lease must never be crowded out), and a lease asked by anyone but a master
lives at most ``max_client_lease_ttl`` seconds; a client (one connection) holds
at most ``max-leases-per-client`` (``zdf.metastore.lease_owners``).
"""

from __future__ import annotations

from zdf.errors import LimitExceeded, PermissionDenied
from zdf.metastore.commands import MAX_VALUE_BYTES, Delete, LeaseGrant, Put, Txn

ANY = frozenset({"metastore", "master", "executor", "client"})
WRITERS = frozenset({"metastore", "master", "client"})
MASTER = frozenset({"metastore", "master"})

OPERATIONS: dict[str, frozenset[str]] = {
    "get": ANY,
    "range": ANY,
    "status": ANY,
    "lease_ttl": ANY,
    "watch": ANY,
    "watch_cancel": ANY,
    "put": WRITERS,
    "delete": WRITERS,
    "txn": WRITERS,
    "lease_grant": WRITERS,
    "lease_keepalive": WRITERS,
    "lease_revoke": WRITERS,
    "compact": MASTER,
}

APP_PREFIX = b"/app/"
FRAMEWORK_PREFIX = b"/zdf/"
WRITABLE: dict[str, tuple[bytes, ...]] = {
    "metastore": (b"",),
    "master": (b"",),
    "client": (APP_PREFIX,),
}

DEFAULT_MAX_LEASES = 10_000
MASTER_LEASE_RESERVE = 16
DEFAULT_MAX_CLIENT_LEASE_TTL = 24 * 3600.0


def check_write(role: str | None, command: object) -> None:
    """Refuse a write of a key outside what ``role`` may write (None: unchecked)."""
    if role is None:
        return
    prefixes = WRITABLE.get(role, ())
    for key in written_keys(command):
        if not key.startswith(prefixes):
            raise PermissionDenied(f"role {role!r} may not write {key[:64]!r}")


def check_values(command: object, limit: int = MAX_VALUE_BYTES) -> None:
    """Refuse a value over ``limit`` bytes written outside the framework's keys."""
    if isinstance(command, Put):
        puts: list[Put] = [command]
    elif isinstance(command, Txn):
        puts = [op for op in (*command.success, *command.failure) if isinstance(op, Put)]
    else:
        return
    for put in puts:
        if len(put.value) > limit and not put.key.startswith(FRAMEWORK_PREFIX):
            raise LimitExceeded(
                f"a value of {len(put.value)} bytes is over {limit} (max-meta-value-bytes)"
            )


def written_keys(command: object) -> list[bytes]:
    if isinstance(command, Put | Delete):
        return [command.key]
    if isinstance(command, Txn):
        ops = (*command.success, *command.failure)
        return [op.key for op in ops if isinstance(op, Put | Delete)]
    return []


def check_lease(
    role: str | None,
    grant: LeaseGrant,
    live: int,
    max_leases: int = DEFAULT_MAX_LEASES,
    max_client_ttl: float = DEFAULT_MAX_CLIENT_LEASE_TTL,
) -> None:
    """The lease limits (see the module docstring)."""
    master = role in MASTER
    limit = max_leases if master else max_leases - MASTER_LEASE_RESERVE
    if live >= limit:
        raise LimitExceeded(f"{live} leases are live, the limit is {limit}")
    if not master and grant.ttl > max_client_ttl:
        raise LimitExceeded(f"a lease TTL of {grant.ttl:g}s is over {max_client_ttl:g}s")
