"""The records a client sees: ``KeyValue`` and watch ``Event``.

They are named tuples (immutable, and built on every write of every replica:
a tuple is several times cheaper to make than a frozen dataclass) with one wire
form each (a msgpack-able dict), used by the state machine, the server and the
client alike, so that the three never disagree on a field name.

Storage forms are positional: a key's record is ``[value, create_revision,
mod_revision, version, lease]`` (the key is the LevelDB key), and a history
record is ``[type, kv, prev_kv]`` with each key-value as its six fields in
order. History written before this form (the wire dict) is read as well.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from zdf.errors import ProtocolError
from zdf.wire.codec import packb, unpackb

EventType = Literal["put", "delete"]


class KeyValue(NamedTuple):
    """A key as etcd describes it: its revisions, how often it was written, its lease."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }

    @classmethod
    def from_wire(cls, data: Any) -> KeyValue:
        if not isinstance(data, dict):
            raise ProtocolError("a key-value is not a map")
        try:
            return cls(
                bytes(data["key"]),
                bytes(data["value"]),
                int(data["create_revision"]),
                int(data["mod_revision"]),
                int(data["version"]),
                int(data.get("lease", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad key-value: {exc!r}") from None

    # Storage form: the key is the LevelDB key, so only the rest is packed.
    def pack(self) -> bytes:
        return packb(
            [self.value, self.create_revision, self.mod_revision, self.version, self.lease]
        )

    @classmethod
    def unpack(cls, key: bytes, data: bytes) -> KeyValue:
        value, create, mod, version, lease = unpackb(data)
        return cls(key, value, create, mod, version, lease)


class Event(NamedTuple):
    """One change at one revision; a delete carries the key and the deleting revision."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "kv": self.kv.to_wire(),
            "prev_kv": None if self.prev_kv is None else self.prev_kv.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: Any) -> Event:
        if not isinstance(data, dict) or data.get("type") not in ("put", "delete"):
            raise ProtocolError("bad watch event")
        prev = data.get("prev_kv")
        return cls(
            data["type"],
            KeyValue.from_wire(data.get("kv")),
            None if prev is None else KeyValue.from_wire(prev),
        )

    def pack(self) -> bytes:
        # The tuples pack as msgpack arrays: [type, [key, value, ...], [key, ...] | None].
        return packb(self)

    @classmethod
    def unpack(cls, data: bytes) -> Event:
        record = unpackb(data)
        if isinstance(record, dict):  # the wire form, as history was first stored
            return cls.from_wire(record)
        try:
            kind, kv, prev = record
            return cls(kind, KeyValue(*kv), None if prev is None else KeyValue(*prev))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad history record: {exc!r}") from None
