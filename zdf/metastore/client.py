"""``MetaClient``: the Python API of the metastore (DESIGN.md, "Metastore").

Built on ``LeaderRpc``: give it the client addresses of some or all replicas;
every call finds the leader (following ``NotLeader`` hints), retries within
its deadline, and carries a request id on writes so that a retry is never
applied twice. A write whose deadline passes raises ``UnknownOutcome``,
because it may or may not have been applied. Reads are linearizable unless
``serializable=True`` is asked for (then any replica answers from its own,
possibly stale, state). Keys and values may be str (utf-8) or bytes; they come
back as bytes.

A ``MetaClient`` is thread-safe (calls are serialised by a lock); a ``Watch``
it returns is for one thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from zdf.errors import Timeout
from zdf.metastore.commands import Comparison, TxnOp
from zdf.metastore.kv import KeyValue
from zdf.metastore.leader_rpc import DEFAULT_ATTEMPT_TIMEOUT, LeaderRpc
from zdf.metastore.txn import Data, PutResponse, TxnResult, to_bytes, txn_result
from zdf.metastore.watch import Watch

DEFAULT_ENDPOINT = "127.0.0.1:10340"


class MetaClient:
    def __init__(
        self,
        endpoints: Sequence[str] | str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        *,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ):
        self._rpc = LeaderRpc(endpoints, timeout=timeout, attempt_timeout=attempt_timeout)
        self._lock = threading.Lock()
        self.timeout = timeout
        self.revision = 0
        """The store's revision in the last response (every response carries it)."""

    @property
    def endpoints(self) -> list[str]:
        return list(self._rpc.endpoints)

    def close(self) -> None:
        with self._lock:
            self._rpc.close()

    def __enter__(self) -> MetaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------
    def _call(self, op: str, body: dict[str, Any], *, write: bool) -> dict[str, Any]:
        with self._lock:
            result = self._rpc.call(op, body, write=write)
        if not isinstance(result, dict):
            raise Timeout(f"{op}: malformed reply")
        revision = result.get("revision")
        if isinstance(revision, int):
            self.revision = revision
        return result

    # -- key-value -----------------------------------------------------------------
    def get(self, key: Data, *, serializable: bool = False) -> KeyValue | None:
        body = {"key": to_bytes(key), "serializable": serializable}
        kv = self._call("get", body, write=False).get("kv")
        return None if kv is None else KeyValue.from_wire(kv)

    def range_with_revision(
        self, prefix: Data = b"", limit: int = 0, *, serializable: bool = False
    ) -> tuple[list[KeyValue], int]:
        """Keys under ``prefix`` (sorted) and the revision they are a snapshot of.

        The snapshot-then-watch pattern: ``watch(prefix, revision + 1)`` continues
        exactly where this snapshot ends.
        """
        body = {"prefix": to_bytes(prefix), "limit": limit, "serializable": serializable}
        result = self._call("range", body, write=False)
        return [KeyValue.from_wire(kv) for kv in result["kvs"]], int(result["revision"])

    def range(
        self, prefix: Data = b"", limit: int = 0, *, serializable: bool = False
    ) -> list[KeyValue]:
        """Keys under ``prefix`` in key order, at most ``limit`` of them (0: all)."""
        return self.range_with_revision(prefix, limit, serializable=serializable)[0]

    def put(self, key: Data, value: Data, lease: int = 0, prev_kv: bool = False) -> PutResponse:
        """Write ``key``; returns the new revision (with ``.prev_kv`` when asked for)."""
        body = {"key": to_bytes(key), "value": to_bytes(value), "lease": lease, "prev_kv": prev_kv}
        result = self._call("put", body, write=True)
        prev = result.get("prev_kv")
        return PutResponse(
            int(result["revision"]), None if prev is None else KeyValue.from_wire(prev)
        )

    def delete(self, key: Data, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it with ``prefix``); returns how many."""
        result = self._call("delete", {"key": to_bytes(key), "prefix": prefix}, write=True)
        return int(result["deleted"])

    def txn(
        self,
        compare: Sequence[Comparison],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success``, else ``failure``."""
        body = {
            "compare": [c.to_dict() for c in compare],
            "success": [o.to_dict() for o in success],
            "failure": [o.to_dict() for o in failure],
        }
        return txn_result(self._call("txn", body, write=True))

    # -- leases --------------------------------------------------------------------
    def lease_grant(self, ttl: float, lease_id: int = 0) -> int:
        """A new lease of ``ttl`` seconds; keys put with it go when it expires."""
        result = self._call("lease_grant", {"ttl": float(ttl), "id": lease_id}, write=True)
        return int(result["id"])

    def lease_keepalive(self, lease_id: int) -> float:
        """Restart the lease's countdown; returns its TTL. ``LeaseNotFound`` if it is gone."""
        return float(self._call("lease_keepalive", {"id": lease_id}, write=True)["ttl"])

    def lease_revoke(self, lease_id: int) -> None:
        """End the lease now and delete its keys."""
        self._call("lease_revoke", {"id": lease_id}, write=True)

    def lease_ttl(self, lease_id: int, keys: bool = False) -> dict[str, Any]:
        """``{"id", "ttl", "remaining", "keys"}`` of a live lease."""
        return self._call("lease_ttl", {"id": lease_id, "keys": keys}, write=False)

    # -- cluster -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``leader``, ``leader_addr``, ``term``, ``commit_index``, ``members``, ``revision``..."""
        return self._call("status", {}, write=False)

    def compact(self, revision: int) -> None:
        """Forget watch history before ``revision``."""
        self._call("compact", {"revision": revision}, write=True)

    def watch(self, prefix: Data = b"", start_revision: int = 0) -> Watch:
        """Events on keys under ``prefix`` from ``start_revision`` (0: from now on)."""
        return Watch(self.endpoints, to_bytes(prefix), start_revision, timeout=self.timeout)
