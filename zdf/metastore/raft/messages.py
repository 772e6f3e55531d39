"""Messages between replicas: frozen dataclasses, validated when parsed.

Every message travels as a one-way ZeroMQ event whose op is the class's
``op`` and whose body is ``to_dict()``; the sender is the DEALER identity the
receiving ROUTER sees (the replica's name), never a field a peer could fake
differently per message. ``parse_message`` raises ``ProtocolError`` for
anything malformed, so a hostile or broken peer costs a counter, not a crash.

- ``Vote`` / ``VoteReply``: an election or, with ``pre``, a PreVote round;
- ``Append`` / ``AppendReply``: log replication and heartbeats. ``seq`` is the
  leader's send counter, echoed back: it tells the leader which of its rounds a
  majority has acknowledged (CheckQuorum, the read lease and ReadIndex);
- ``Snapshot`` / ``SnapshotReply``: a snapshot in chunks, one in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zdf.errors import ProtocolError
from zdf.metastore.commands import as_bool, as_bytes, as_int, as_list, as_map, field

MAX_ENTRIES_PER_APPEND = 4096
MAX_PAYLOAD_BYTES = 2 << 20
MAX_CHUNK_BYTES = 8 << 20
MAX_NAME = 64
MAX_ADDR = 256

Entry = tuple[int, bytes]


def _name(value: Any, name: str) -> str:
    return as_bytes(value, name, MAX_NAME).decode("utf-8", "replace")


def _addr(value: Any, name: str) -> str:
    return as_bytes(value, name, MAX_ADDR).decode("utf-8", "replace")


def _n(value: Any, name: str) -> int:
    return as_int(value, name)


def _entries(value: Any, name: str) -> list[Entry]:
    out: list[Entry] = []
    for item in as_list(value, name, MAX_ENTRIES_PER_APPEND):
        pair = as_list(item, name, 2)
        if len(pair) != 2:
            raise ProtocolError(f"field {name!r}: an entry is [term, payload]")
        out.append((as_int(pair[0], "term"), as_bytes(pair[1], "payload", MAX_PAYLOAD_BYTES)))
    return out


@dataclass(frozen=True, slots=True)
class Vote:
    op: ClassVar[str] = "raft_vote"
    term: int
    last_index: int
    last_term: int
    pre: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vote:
        return cls(
            field(d, "term", _n, ...),
            field(d, "last_index", _n, ...),
            field(d, "last_term", _n, ...),
            field(d, "pre", as_bool, False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "last_index": self.last_index,
            "last_term": self.last_term,
            "pre": self.pre,
        }


@dataclass(frozen=True, slots=True)
class VoteReply:
    op: ClassVar[str] = "raft_vote_reply"
    term: int
    granted: bool
    pre: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VoteReply:
        return cls(
            field(d, "term", _n, ...),
            field(d, "granted", as_bool, ...),
            field(d, "pre", as_bool, False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "granted": self.granted, "pre": self.pre}


@dataclass(frozen=True, slots=True)
class Append:
    op: ClassVar[str] = "raft_append"
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    seq: int
    leader_addr: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Append:
        return cls(
            field(d, "term", _n, ...),
            field(d, "prev_index", _n, ...),
            field(d, "prev_term", _n, ...),
            tuple(field(d, "entries", _entries, [])),
            field(d, "commit", _n, ...),
            field(d, "seq", _n, 0),
            field(d, "leader_addr", _addr, ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "prev_index": self.prev_index,
            "prev_term": self.prev_term,
            "entries": [list(e) for e in self.entries],
            "commit": self.commit,
            "seq": self.seq,
            "leader_addr": self.leader_addr,
        }


@dataclass(frozen=True, slots=True)
class AppendReply:
    """``success``: the follower's log matches the leader's up to ``match``.

    On a rejection ``match`` is a hint: the follower has nothing that can
    match after it, so the leader retries from ``match + 1``.
    """

    op: ClassVar[str] = "raft_append_reply"
    term: int
    success: bool
    match: int
    seq: int
    addr: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AppendReply:
        return cls(
            field(d, "term", _n, ...),
            field(d, "success", as_bool, ...),
            field(d, "match", _n, ...),
            field(d, "seq", _n, 0),
            field(d, "addr", _addr, ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "success": self.success,
            "match": self.match,
            "seq": self.seq,
            "addr": self.addr,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One chunk of the state machine at ``index``/``index_term``, from ``offset``."""

    op: ClassVar[str] = "raft_snapshot"
    term: int
    index: int
    index_term: int
    offset: int
    items: tuple[tuple[bytes, bytes], ...]
    done: bool
    seq: int
    leader_addr: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        raw = as_list(d.get("items") or [], "items", 1 << 20)
        items = []
        for pair in raw:
            p = as_list(pair, "items", 2)
            if len(p) != 2:
                raise ProtocolError("field 'items': an item is [key, value]")
            items.append((as_bytes(p[0], "key", 1 << 16), as_bytes(p[1], "value", MAX_CHUNK_BYTES)))
        return cls(
            field(d, "term", _n, ...),
            field(d, "index", _n, ...),
            field(d, "index_term", _n, ...),
            field(d, "offset", _n, ...),
            tuple(items),
            field(d, "done", as_bool, ...),
            field(d, "seq", _n, 0),
            field(d, "leader_addr", _addr, ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "index": self.index,
            "index_term": self.index_term,
            "offset": self.offset,
            "items": [list(i) for i in self.items],
            "done": self.done,
            "seq": self.seq,
            "leader_addr": self.leader_addr,
        }


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """The follower holds the snapshot's items before ``offset`` (all of it if ``done``)."""

    op: ClassVar[str] = "raft_snapshot_reply"
    term: int
    index: int
    offset: int
    done: bool
    seq: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotReply:
        return cls(
            field(d, "term", _n, ...),
            field(d, "index", _n, ...),
            field(d, "offset", _n, ...),
            field(d, "done", as_bool, ...),
            field(d, "seq", _n, 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "index": self.index,
            "offset": self.offset,
            "done": self.done,
            "seq": self.seq,
        }


Message = Vote | VoteReply | Append | AppendReply | Snapshot | SnapshotReply
MESSAGES: dict[str, Any] = {
    c.op: c for c in (Vote, VoteReply, Append, AppendReply, Snapshot, SnapshotReply)
}


def parse_message(op: str, body: Any) -> Message:
    cls = MESSAGES.get(op)
    if cls is None:
        raise ProtocolError(f"unknown peer message {op!r}")
    return cls.from_dict(as_map(body, "a peer message"))  # type: ignore[no-any-return]
