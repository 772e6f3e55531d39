"""Commands of the state machine and the requests of the metastore protocol.

Theory of operation: everything that changes state is a *command*, a frozen
dataclass that validates itself on construction and has one msgpack-able dict
form (``to_dict``/``parse_command``). The server builds commands from request
bodies (so bad input is refused before it reaches the log); the state machine
parses the same dicts again when it applies them, so that a command read back
from a future Raft log is checked the same way. Anything the state machine
needs to be deterministic -- the clock for lease deadlines, lease ids -- is in
the command, never read from the machine that applies it.

Bad input raises ``ProtocolError`` with a message naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from zdf.errors import ProtocolError

MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 1 << 20
MAX_TXN_OPS = 128
MAX_TXN_COMPARES = 128
MAX_LEASE_TTL = 30 * 24 * 3600.0
MAX_EXPIRE_IDS = 10_000
MAX_ID = 2**63 - 1
MAX_RANGE_LIMIT = 1_000_000

COMPARE_TARGETS = ("value", "version", "mod_revision", "create_revision", "lease")
COMPARE_RESULTS = ("=", "!=", "<", ">")

T = TypeVar("T")


# -- field parsers -------------------------------------------------------------
def as_bytes(value: Any, name: str, limit: int, *, allow_empty: bool = True) -> bytes:
    """Bytes, or a str taken as utf-8, of at most ``limit`` bytes."""
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ProtocolError(f"field {name!r}: expected bytes or str, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > limit:
        raise ProtocolError(f"field {name!r}: {len(data)} bytes is over the limit of {limit}")
    if not data and not allow_empty:
        raise ProtocolError(f"field {name!r}: must not be empty")
    return data


def as_int(value: Any, name: str, low: int = 0, high: int = MAX_ID) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"field {name!r}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ProtocolError(f"field {name!r}: {value} is not in {low}..{high}")
    return value


def as_float(value: Any, name: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError(f"field {name!r}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ProtocolError(f"field {name!r}: {value} is not in {low}..{high}")
    return number


def as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"field {name!r}: expected true or false, got {type(value).__name__}")
    return value


def as_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a map, got {type(value).__name__}")
    return value


def as_list(value: Any, name: str, limit: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ProtocolError(f"field {name!r}: expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ProtocolError(f"field {name!r}: {len(value)} items is over the limit of {limit}")
    return list(value)


def field(data: dict[str, Any], name: str, parse: Callable[[Any, str], T], default: Any) -> T:
    """``parse(data[name])``, or ``default`` when absent (``...`` makes it required)."""
    if name not in data or data[name] is None:
        if default is ...:
            raise ProtocolError(f"field {name!r} is required")
        return default  # type: ignore[no-any-return]
    return parse(data[name], name)


def _key(value: Any, name: str) -> bytes:
    return as_bytes(value, name, MAX_KEY_BYTES)


def _value(value: Any, name: str) -> bytes:
    return as_bytes(value, name, MAX_VALUE_BYTES)


def _id(value: Any, name: str) -> int:
    return as_int(value, name)


def _ttl(value: Any, name: str) -> float:
    ttl = as_float(value, name, 0.0, MAX_LEASE_TTL)
    if ttl <= 0:
        raise ProtocolError(f"field {name!r}: a lease TTL must be positive")
    return ttl


def _now(value: Any, name: str) -> float:
    return as_float(value, name, 0.0, 1e12)


def _limit(value: Any, name: str) -> int:
    return as_int(value, name, 0, MAX_RANGE_LIMIT)


def _bool(value: Any, name: str) -> bool:
    return as_bool(value, name)


# -- key-value operations ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Put:
    op: ClassVar[str] = "put"
    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False

    def __post_init__(self) -> None:
        if (
            type(self.key) is bytes
            and len(self.key) <= MAX_KEY_BYTES
            and type(self.value) is bytes
            and len(self.value) <= MAX_VALUE_BYTES
            and type(self.lease) is int
            and 0 <= self.lease <= MAX_ID
        ):
            return  # the common case, checked without a call per field
        _key(self.key, "key")
        _value(self.value, "value")
        _id(self.lease, "lease")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Put:
        key, value = data.get("key"), data.get("value")
        lease, prev_kv = data.get("lease", 0), data.get("prev_kv", False)
        exact = type(key) is bytes and type(value) is bytes and type(lease) is int
        if exact and type(prev_kv) is bool:  # __post_init__ checks the limits
            return cls(key, value, lease, prev_kv)  # type: ignore[arg-type]
        return cls(
            field(data, "key", _key, ...),
            field(data, "value", _value, ...),
            field(data, "lease", _id, 0),
            field(data, "prev_kv", _bool, False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "key": self.key,
            "value": self.value,
            "lease": self.lease,
            "prev_kv": self.prev_kv,
        }


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one key, or with ``prefix`` every key that starts with ``key``."""

    op: ClassVar[str] = "delete"
    key: bytes
    prefix: bool = False
    prev_kv: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delete:
        return cls(
            field(data, "key", _key, ...),
            field(data, "prefix", _bool, False),
            field(data, "prev_kv", _bool, False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "prefix": self.prefix, "prev_kv": self.prev_kv}


@dataclass(frozen=True, slots=True)
class Get:
    """Read one key, or with ``prefix`` up to ``limit`` keys (0: all) in key order."""

    op: ClassVar[str] = "get"
    key: bytes
    prefix: bool = False
    limit: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Get:
        return cls(
            field(data, "key", _key, ...),
            field(data, "prefix", _bool, False),
            field(data, "limit", _limit, 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "prefix": self.prefix, "limit": self.limit}


TxnOp = Put | Delete | Get
_TXN_OPS: dict[str, Any] = {"put": Put, "delete": Delete, "get": Get}


@dataclass(frozen=True, slots=True)
class Comparison:
    """``target(key) result value``, e.g. version(b"a") = 0; see ``COMPARE_TARGETS``."""

    key: bytes
    target: str
    result: str
    value: bytes | int

    def __post_init__(self) -> None:
        if self.target not in COMPARE_TARGETS:
            raise ProtocolError(f"compare target {self.target!r}: one of {COMPARE_TARGETS}")
        if self.result not in COMPARE_RESULTS:
            raise ProtocolError(f"compare result {self.result!r}: one of {COMPARE_RESULTS}")
        if self.target == "value":
            _value(self.value, "compare value")
        else:
            as_int(self.value, "compare value")

    @classmethod
    def from_dict(cls, data: Any) -> Comparison:
        data = as_map(data, "a compare")
        target = data.get("target")
        value = data.get("value")
        if target == "value":
            value = _value(value, "value")
        return cls(field(data, "key", _key, ...), str(target), str(data.get("result")), value)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "target": self.target, "result": self.result, "value": self.value}


def parse_txn_op(data: Any) -> TxnOp:
    data = as_map(data, "a txn operation")
    op = data.get("op")
    cls = _TXN_OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"txn operation {data.get('op')!r}: one of put, delete, get")
    return cls.from_dict(data)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds run ``success`` else ``failure``, all at one revision."""

    op: ClassVar[str] = "txn"
    compare: tuple[Comparison, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()

    def __post_init__(self) -> None:
        if len(self.compare) > MAX_TXN_COMPARES:
            raise ProtocolError(f"a txn has at most {MAX_TXN_COMPARES} compares")
        for branch in (self.success, self.failure):
            if len(branch) > MAX_TXN_OPS:
                raise ProtocolError(f"a txn branch has at most {MAX_TXN_OPS} operations")
            _check_no_overlap(branch)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Txn:
        compare = as_list(data.get("compare") or [], "compare", MAX_TXN_COMPARES)
        success = as_list(data.get("success") or [], "success", MAX_TXN_OPS)
        failure = as_list(data.get("failure") or [], "failure", MAX_TXN_OPS)
        return cls(
            tuple(Comparison.from_dict(c) for c in compare),
            tuple(parse_txn_op(op) for op in success),
            tuple(parse_txn_op(op) for op in failure),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "compare": [c.to_dict() for c in self.compare],
            "success": [o.to_dict() for o in self.success],
            "failure": [o.to_dict() for o in self.failure],
        }

    @property
    def writes(self) -> bool:
        return any(not isinstance(o, Get) for o in (*self.success, *self.failure))


def _check_no_overlap(branch: Sequence[TxnOp]) -> None:
    # As in etcd: one revision cannot hold two versions of a key.
    puts = [o.key for o in branch if isinstance(o, Put)]
    if len(set(puts)) != len(puts):
        raise ProtocolError("a txn branch puts the same key twice")
    for d in branch:
        if isinstance(d, Delete):
            for key in puts:
                if key == d.key or (d.prefix and key.startswith(d.key)):
                    raise ProtocolError("a txn branch puts and deletes the same key")


# -- leases and maintenance --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Grant lease ``id`` (0: the state machine picks the next free id)."""

    op: ClassVar[str] = "lease_grant"
    id: int
    ttl: float
    now: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseGrant:
        return cls(
            field(data, "id", _id, 0), field(data, "ttl", _ttl, ...), field(data, "now", _now, ...)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "ttl": self.ttl, "now": self.now}


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    op: ClassVar[str] = "lease_revoke"
    id: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseRevoke:
        return cls(field(data, "id", _id, ...))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}


@dataclass(frozen=True, slots=True)
class LeaseKeepalive:
    """Move the lease's deadline to ``now + ttl``; ``now`` is the leader's clock."""

    op: ClassVar[str] = "lease_keepalive"
    id: int
    now: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseKeepalive:
        return cls(field(data, "id", _id, ...), field(data, "now", _now, ...))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "now": self.now}


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Revoke leases the leader found expired at ``now``.

    A lease is skipped if it is gone or if its deadline has moved past ``now``
    (a keepalive applied between the leader's decision and this command).
    """

    op: ClassVar[str] = "lease_expire"
    ids: tuple[int, ...]
    now: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseExpire:
        ids = as_list(data.get("ids"), "ids", MAX_EXPIRE_IDS)
        return cls(tuple(_id(i, "ids") for i in ids), field(data, "now", _now, ...))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "ids": list(self.ids), "now": self.now}


@dataclass(frozen=True, slots=True)
class Compact:
    """Forget watch history before ``revision``."""

    op: ClassVar[str] = "compact"
    revision: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Compact:
        return cls(field(data, "revision", _id, ...))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "revision": self.revision}


@dataclass(frozen=True, slots=True)
class Noop:
    """Changes nothing; a new Raft leader commits one to learn its commit index."""

    op: ClassVar[str] = "noop"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Noop:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op}


Command = (
    Put | Delete | Txn | LeaseGrant | LeaseRevoke | LeaseKeepalive | LeaseExpire | Compact | Noop
)
COMMANDS: dict[str, Any] = {
    c.op: c
    for c in (
        Put,
        Delete,
        Txn,
        LeaseGrant,
        LeaseRevoke,
        LeaseKeepalive,
        LeaseExpire,
        Compact,
        Noop,
    )
}

MAX_REQUEST_ID_BYTES = 32


def request_id(value: Any, name: str) -> bytes:
    """A client's idempotency token for a write (retries carry the same one)."""
    return as_bytes(value, name, MAX_REQUEST_ID_BYTES, allow_empty=False)


def parse_command(data: Any) -> Command:
    """A command dict (as stored in the log) -> the command; ``ProtocolError`` if bad."""
    data = as_map(data, "a command")
    op = data.get("op")
    cls = COMMANDS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"unknown command {data.get('op')!r}")
    return cls.from_dict(data)  # type: ignore[no-any-return]
