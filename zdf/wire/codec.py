"""The control-message envelope: the one place msgpack is packed and unpacked.

A control message is one msgpack map, optionally followed by raw frames
(numpy buffers travel zero-copy after the header)::

    {"v": 1, "k": "req" | "rep" | "err" | "ev", "op": str, "rid": int, "b": body}

``rid`` pairs a reply with its request (0 for one-way events). A frame that is
not a map, has a wrong version, kind or field type, or a body nested deeper than
the process's limit (which would break whatever stores or re-packs it) raises
``ProtocolError``; callers count it and drop it or answer with an error, never crash.

The nesting limit is process-wide: ``DEFAULT_MAX_DEPTH`` until the process sets
its ``max-message-depth`` config key (``set_max_depth``, at start; workers take
the executor's from ``ZDF_MAX_MESSAGE_DEPTH``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack

from zdf.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_OP_LENGTH = 64
DEFAULT_MAX_DEPTH = 32
DEPTH_RANGE = (16, 256)
"""The range ``max-message-depth`` may take: the framework's own messages nest about
ten deep; past a few hundred, JSON records and msgpack re-packing hit their limits."""
_max_depth = DEFAULT_MAX_DEPTH
_CONTAINERS = (dict, list)


class Kind(str, Enum):
    REQUEST = "req"
    REPLY = "rep"
    ERROR = "err"
    EVENT = "ev"


_KINDS = {k.value: k for k in Kind}


@dataclass(slots=True)
class Message:
    kind: Kind
    op: str
    rid: int = 0
    body: Any = None
    frames: list[Any] = field(default_factory=list)


_local = threading.local()


def packb(obj: Any) -> bytes:
    # ``msgpack.packb`` builds a Packer per call, which costs more than packing a
    # small message; a Packer per thread is reused (it resets itself on errors).
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)  # type: ignore[no-any-return]


def unpackb(data: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"bad msgpack: {type(exc).__name__}") from None


def encode(kind: Kind, op: str, rid: int = 0, body: Any = None) -> bytes:
    return packb({"v": PROTOCOL_VERSION, "k": kind.value, "op": op, "rid": rid, "b": body})


def decode(frame: bytes | memoryview) -> Message:
    obj = unpackb(frame)
    if not isinstance(obj, dict):
        raise ProtocolError("envelope is not a map")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} not supported (want {PROTOCOL_VERSION})")
    kind = _KINDS.get(obj.get("k"))  # type: ignore[arg-type]
    op = obj.get("op")
    rid = obj.get("rid", 0)
    if kind is None:
        raise ProtocolError(f"unknown message kind {obj.get('k')!r}")
    if not isinstance(op, str) or not op or len(op) > MAX_OP_LENGTH:
        raise ProtocolError("operation name missing or not a short string")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise ProtocolError("request id is not an integer")
    body = obj.get("b")
    if type(body) in _CONTAINERS:
        try:
            check_depth(body)
        except ProtocolError as exc:  # the envelope is sound: the error can answer it
            raise ProtocolError(exc.message, rid=rid, kind=kind.value) from None
    return Message(kind, op, rid, body)


def set_max_depth(limit: int) -> None:
    """This process's ``max-message-depth`` (within ``DEPTH_RANGE``)."""
    global _max_depth
    low, high = DEPTH_RANGE
    if not low <= limit <= high:
        raise ValueError(f"a nesting depth from {low} to {high}, not {limit}")
    _max_depth = limit


def max_depth() -> int:
    return _max_depth


def check_depth(obj: Any, limit: int | None = None) -> None:
    """Refuse containers nested more than ``limit`` (default: this process's
    ``max-message-depth``) deep, level by level, without recursion."""
    if limit is None:
        limit = _max_depth
    level: list[Any] = [obj]
    for _ in range(limit):
        below: list[Any] = []
        keep = below.append
        for item in level:
            for value in item.values() if type(item) is dict else item:
                kind = type(value)
                if kind is list or kind is dict:
                    keep(value)
        if not below:
            return
        level = below
    raise ProtocolError(f"a message nested more than {limit} deep (max-message-depth)")
