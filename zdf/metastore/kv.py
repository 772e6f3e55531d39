"""The records a client sees: ``KeyValue`` and watch ``Event``.

They are frozen dataclasses with one wire form each (a msgpack-able dict), used
by the state machine, the server and the client alike, so that the three never
disagree on a field name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from zdf.errors import ProtocolError
from zdf.wire.codec import packb, unpackb

EventType = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class KeyValue:
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


@dataclass(frozen=True, slots=True)
class Event:
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
        # ``packb(self.to_wire())``, byte for byte, without the method calls: one
        # history record per change on every replica.
        kv, prev = self.kv, self.prev_kv
        return packb(
            {
                "type": self.type,
                "kv": {
                    "key": kv.key,
                    "value": kv.value,
                    "create_revision": kv.create_revision,
                    "mod_revision": kv.mod_revision,
                    "version": kv.version,
                    "lease": kv.lease,
                },
                "prev_kv": None
                if prev is None
                else {
                    "key": prev.key,
                    "value": prev.value,
                    "create_revision": prev.create_revision,
                    "mod_revision": prev.mod_revision,
                    "version": prev.version,
                    "lease": prev.lease,
                },
            }
        )

    @classmethod
    def unpack(cls, data: bytes) -> Event:
        return cls.from_wire(unpackb(data))
