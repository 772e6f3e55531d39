"""How each command changes the store: the deterministic heart of the metastore.

Theory of operation: an ``Applier`` runs the commands of one batch against a
``Staging`` (pending writes over LevelDB) and its own copy of the counters.
Every command that changes at least one key is one *write txn* and takes the
next revision; a command that changes nothing (a delete of a missing key, a
txn whose branch only reads, a lease keepalive) leaves the revision alone, as
in etcd. Each change is also written as a watch event under ``h<rev><seq>``.

A command either fails before it changes anything (raising a ``ZdfError`` that
becomes its deterministic result) or succeeds completely. Nothing here reads a
clock or a random source: the same commands give the same store everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zdf.errors import CompactedError, LeaseNotFound, ZdfError
from zdf.metastore import keys
from zdf.metastore.commands import (
    Command,
    Compact,
    Comparison,
    Delete,
    Get,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepalive,
    LeaseRevoke,
    Noop,
    Put,
    Txn,
    TxnOp,
)
from zdf.metastore.kv import Event, KeyValue
from zdf.metastore.staging import Staging
from zdf.wire.codec import packb


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl: float
    deadline: float  # wall-clock seconds, from the ``now`` of the last grant/keepalive

    def pack(self) -> bytes:
        return packb([self.ttl, self.deadline])


@dataclass(slots=True)
class Counters:
    revision: int = 0
    compact_revision: int = 0
    lease_next: int = 1


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


class Applier:
    def __init__(
        self, staging: Staging, counters: Counters, leases: Mapping[int, LeaseInfo]
    ) -> None:
        self.staging = staging
        self.counters = counters
        self.events: list[Event] = []
        self.lease_changes: dict[int, LeaseInfo | None] = {}
        self._leases = leases
        self._txn_revision: int | None = None
        self._seq = 0
        self._handlers: dict[type, Callable[[Any], dict[str, Any]]] = {
            Put: self._put,
            Delete: self._delete,
            Txn: self._txn,
            LeaseGrant: self._lease_grant,
            LeaseRevoke: self._lease_revoke,
            LeaseKeepalive: self._lease_keepalive,
            LeaseExpire: self._lease_expire,
            Compact: self._compact,
            Noop: lambda _: {"op": "noop"},
        }

    def apply(self, command: Command) -> dict[str, Any]:
        """Apply one command as one write txn; the result carries the revision after it."""
        self._txn_revision = None
        result = self._handlers[type(command)](command)
        if self._txn_revision is not None:
            self.counters.revision = self._txn_revision
        result["revision"] = self.counters.revision
        return result

    # -- helpers -------------------------------------------------------------------
    def _write_revision(self) -> int:
        if self._txn_revision is None:
            self._txn_revision = self.counters.revision + 1
            self._seq = 0
        return self._txn_revision

    def _event(self, event: Event) -> None:
        self.staging.put(keys.history_key(event.revision, self._seq), event.pack())
        self._seq += 1
        self.events.append(event)

    def _kv(self, key: bytes) -> KeyValue | None:
        raw = self.staging.get(keys.data_key(key))
        return None if raw is None else KeyValue.unpack(key, raw)

    def lease(self, lease_id: int) -> LeaseInfo | None:
        if lease_id in self.lease_changes:
            return self.lease_changes[lease_id]
        return self._leases.get(lease_id)

    def _set_lease(self, info: LeaseInfo) -> None:
        self.staging.put(keys.lease_key(info.id), info.pack())
        self.lease_changes[info.id] = info

    def _remove(self, kv: KeyValue, revision: int) -> None:
        self.staging.delete(keys.data_key(kv.key))
        if kv.lease:
            self.staging.delete(keys.attach_key(kv.lease, kv.key))
        self._event(Event("delete", KeyValue(kv.key, b"", 0, revision, 0, 0), kv))

    def _require_leases(self, ops: tuple[TxnOp, ...]) -> None:
        for op in ops:
            if isinstance(op, Put) and op.lease and self.lease(op.lease) is None:
                raise LeaseNotFound(f"lease {op.lease} not found", lease=op.lease)

    # -- key-value -----------------------------------------------------------------
    def _put(self, op: Put) -> dict[str, Any]:
        if op.lease:
            self._require_leases((op,))
        return self._do_put(op)

    def _do_put(self, op: Put) -> dict[str, Any]:
        # The hot path of every write: helpers inlined (same keys, same records).
        revision = self._write_revision()
        data_key = keys.DATA + op.key
        raw = self.staging.get(data_key)
        prev = None if raw is None else KeyValue.unpack(op.key, raw)
        kv = KeyValue(
            op.key,
            op.value,
            prev.create_revision if prev else revision,
            revision,
            prev.version + 1 if prev else 1,
            op.lease,
        )
        self.staging.put(data_key, kv.pack())
        if prev is not None and prev.lease and prev.lease != op.lease:
            self.staging.delete(keys.attach_key(prev.lease, op.key))
        if op.lease:
            self.staging.put(keys.attach_key(op.lease, op.key), b"")
        self._event(Event("put", kv, prev))
        wanted = prev if op.prev_kv and prev is not None else None
        return {"op": "put", "prev_kv": None if wanted is None else wanted.to_wire()}

    def _delete(self, op: Delete) -> dict[str, Any]:
        if op.prefix:
            found = [
                KeyValue.unpack(keys.user_key(k), v)
                for k, v in list(self.staging.scan(keys.data_key(op.key)))
            ]
        else:
            one = self._kv(op.key)
            found = [] if one is None else [one]
        if found:
            revision = self._write_revision()
            for kv in found:
                self._remove(kv, revision)
        prev = [kv.to_wire() for kv in found] if op.prev_kv else []
        return {"op": "delete", "deleted": len(found), "prev_kvs": prev}

    def _get(self, op: Get) -> dict[str, Any]:
        if not op.prefix:
            one = self._kv(op.key)
            return {"op": "get", "kvs": [] if one is None else [one.to_wire()], "more": False}
        kvs: list[dict[str, Any]] = []
        more = False
        for k, v in self.staging.scan(keys.data_key(op.key)):
            if op.limit and len(kvs) == op.limit:
                more = True
                break
            kvs.append(KeyValue.unpack(keys.user_key(k), v).to_wire())
        return {"op": "get", "kvs": kvs, "more": more}

    def _holds(self, cmp: Comparison) -> bool:
        kv = self._kv(cmp.key)
        if cmp.target == "value":
            if kv is None:  # as in etcd: a missing key has no value to compare
                return False
            actual: Any = kv.value
        else:
            actual = 0 if kv is None else getattr(kv, cmp.target)
        return _COMPARE[cmp.result](actual, cmp.value)

    def _txn(self, op: Txn) -> dict[str, Any]:
        succeeded = all(self._holds(c) for c in op.compare)
        branch = op.success if succeeded else op.failure
        self._require_leases(branch)
        responses = []
        for sub in branch:
            if isinstance(sub, Put):
                responses.append(self._do_put(sub))
            elif isinstance(sub, Delete):
                responses.append(self._delete(sub))
            else:
                responses.append(self._get(sub))
        return {"op": "txn", "succeeded": succeeded, "responses": responses}

    # -- leases ----------------------------------------------------------------------
    def _lease_grant(self, op: LeaseGrant) -> dict[str, Any]:
        lease_id = op.id or self.counters.lease_next
        if self.lease(lease_id) is not None:
            raise ZdfError(f"lease {lease_id} already exists", lease=lease_id)
        self.counters.lease_next = max(self.counters.lease_next, lease_id + 1)
        self._set_lease(LeaseInfo(lease_id, op.ttl, op.now + op.ttl))
        return {"op": "lease_grant", "id": lease_id, "ttl": op.ttl}

    def _existing_lease(self, lease_id: int) -> LeaseInfo:
        info = self.lease(lease_id)
        if info is None:
            raise LeaseNotFound(f"lease {lease_id} not found", lease=lease_id)
        return info

    def _lease_keepalive(self, op: LeaseKeepalive) -> dict[str, Any]:
        info = self._existing_lease(op.id)
        self._set_lease(LeaseInfo(op.id, info.ttl, op.now + info.ttl))
        return {"op": "lease_keepalive", "id": op.id, "ttl": info.ttl}

    def _revoke(self, lease_id: int) -> None:
        prefix = keys.attach_prefix(lease_id)
        attached = [k[len(prefix) :] for k, _ in list(self.staging.scan(prefix))]
        for key in attached:
            self.staging.delete(keys.attach_key(lease_id, key))
            kv = self._kv(key)
            if kv is not None:
                self._remove(kv, self._write_revision())
        self.staging.delete(keys.lease_key(lease_id))
        self.lease_changes[lease_id] = None

    def _lease_revoke(self, op: LeaseRevoke) -> dict[str, Any]:
        self._existing_lease(op.id)
        self._revoke(op.id)
        return {"op": "lease_revoke", "id": op.id}

    def _lease_expire(self, op: LeaseExpire) -> dict[str, Any]:
        expired = []
        for lease_id in dict.fromkeys(op.ids):
            info = self.lease(lease_id)
            if info is not None and info.deadline <= op.now:
                expired.append(lease_id)
        for lease_id in expired:
            self._revoke(lease_id)
        return {"op": "lease_expire", "expired": expired}

    # -- maintenance -----------------------------------------------------------------
    def _compact(self, op: Compact) -> dict[str, Any]:
        if op.revision > self.counters.revision:
            raise ZdfError(
                f"cannot compact at revision {op.revision}: current revision is "
                f"{self.counters.revision}"
            )
        if op.revision <= self.counters.compact_revision:
            raise CompactedError(
                f"revision {op.revision} is already compacted "
                f"(compacted up to {self.counters.compact_revision})",
                compact_revision=self.counters.compact_revision,
            )
        stop = keys.history_key(op.revision, 0)
        for key, _ in list(self.staging.scan(keys.HISTORY, stop)):
            self.staging.delete(key)
        self.counters.compact_revision = op.revision
        return {"op": "compact", "compact_revision": op.revision}
