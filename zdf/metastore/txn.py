"""Builders for transactions: ``Compare.version("k") == 0``, ``put_op``, ``delete_op``, ``get_op``.

A compare is built with ordinary operators so that a txn reads like its
intent::

    client.txn(
        [Compare.version("leader") == 0],
        [put_op("leader", "me", lease=lease_id)],
        [get_op("leader")],
    )
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zdf.metastore.commands import Comparison, Delete, Get, Put, TxnOp
from zdf.metastore.kv import KeyValue

Data = str | bytes


def to_bytes(data: Data) -> bytes:
    """Keys and values may be given as str (taken as utf-8) or bytes."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected str or bytes, got {type(data).__name__}")


class _Target:
    """One side of a compare; the comparison operators build a ``Comparison``."""

    def __init__(self, key: Data, target: str) -> None:
        self.key = to_bytes(key)
        self.target = target

    def _make(self, result: str, value: Any) -> Comparison:
        if self.target == "value":
            value = to_bytes(value)
        return Comparison(self.key, self.target, result, value)

    def __eq__(self, value: Any) -> Comparison:  # type: ignore[override]
        return self._make("=", value)

    def __ne__(self, value: Any) -> Comparison:  # type: ignore[override]
        return self._make("!=", value)

    def __lt__(self, value: Any) -> Comparison:
        return self._make("<", value)

    def __gt__(self, value: Any) -> Comparison:
        return self._make(">", value)

    __hash__ = None  # type: ignore[assignment]


class Compare:
    """``Compare.value(k) == b"v"``, ``Compare.version(k) == 0`` (0: the key does not exist)."""

    @staticmethod
    def value(key: Data) -> _Target:
        return _Target(key, "value")

    @staticmethod
    def version(key: Data) -> _Target:
        return _Target(key, "version")

    @staticmethod
    def mod_revision(key: Data) -> _Target:
        return _Target(key, "mod_revision")

    @staticmethod
    def create_revision(key: Data) -> _Target:
        return _Target(key, "create_revision")

    @staticmethod
    def lease(key: Data) -> _Target:
        return _Target(key, "lease")


def put_op(key: Data, value: Data, lease: int = 0, prev_kv: bool = False) -> Put:
    return Put(to_bytes(key), to_bytes(value), lease, prev_kv)


def delete_op(key: Data, prefix: bool = False) -> Delete:
    return Delete(to_bytes(key), prefix)


def get_op(key: Data, prefix: bool = False, limit: int = 0) -> Get:
    return Get(to_bytes(key), prefix, limit)


class PutResponse(int):
    """The revision of a put (it *is* that int), with ``prev_kv`` when it was asked for."""

    prev_kv: KeyValue | None

    def __new__(cls, revision: int, prev_kv: KeyValue | None = None) -> PutResponse:
        obj = super().__new__(cls, revision)
        obj.prev_kv = prev_kv
        return obj

    @property
    def revision(self) -> int:
        return int(self)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, and one response per operation of it.

    A put answers a ``PutResponse`` (the txn's revision), a delete the number
    of keys deleted, a get a list of ``KeyValue``.
    """

    succeeded: bool
    responses: list[Any]
    revision: int


def txn_result(body: dict[str, Any]) -> TxnResult:
    revision = int(body["revision"])
    responses: list[Any] = []
    for resp in body.get("responses", []):
        if resp.get("op") == "put":
            prev = resp.get("prev_kv")
            responses.append(
                PutResponse(revision, None if prev is None else KeyValue.from_wire(prev))
            )
        elif resp.get("op") == "delete":
            responses.append(int(resp["deleted"]))
        else:
            responses.append([KeyValue.from_wire(kv) for kv in resp.get("kvs", [])])
    return TxnResult(bool(body["succeeded"]), responses, revision)


__all__ = [
    "Compare",
    "Comparison",
    "PutResponse",
    "TxnOp",
    "TxnResult",
    "delete_op",
    "get_op",
    "put_op",
    "to_bytes",
    "txn_result",
]
