"""Messages between replicas: frozen dataclasses, validated when parsed.

Every message travels as a one-way event in the usual envelope (see
``zdf.wire.codec``) whose op is the class's ``op`` and whose body is
``to_wire()``: the fields as one positional msgpack array, in the order of the
dataclass. That is the hot path of replication -- one Append per follower per
group commit, one acknowledgement back -- so a body is an array rather than a
map: no field names to pack, look up and check one call at a time. The sender
is the DEALER identity the receiving ROUTER sees (the replica's name), never a
field a peer could fake differently per message. ``parse_message`` raises
``ProtocolError`` for anything malformed (a body of the wrong length, a field of
the wrong type or out of range), so a hostile or broken peer costs a counter,
not a crash.

- ``Vote`` / ``VoteReply``: an election or, with ``pre``, a PreVote round;
- ``Append`` / ``AppendReply``: log replication and heartbeats. ``seq`` is the
  leader's send counter, echoed back: it tells the leader which of its rounds a
  majority has acknowledged (CheckQuorum, the read lease and ReadIndex);
- ``Snapshot`` / ``SnapshotReply``: a snapshot in chunks, one in flight;
- ``Applied``: what the leader's apply of committed entries wrote, so that a
  follower may write it instead of running the entries (``zdf.metastore.hints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from zdf.errors import ProtocolError

MAX_ENTRIES_PER_APPEND = 4096
MAX_PAYLOAD_BYTES = 2 << 20
MAX_CHUNK_BYTES = 8 << 20
MAX_CHUNK_ITEMS = 1 << 20
MAX_SNAPSHOT_KEY_BYTES = 1 << 16
MAX_ADDR = 256
MAX_NUMBER = 2**63 - 1

Entry = tuple[int, bytes]


# -- field checks (one call per field, no per-field dict lookups) ------------------------
def _n(value: Any, name: str) -> int:
    if type(value) is int and 0 <= value <= MAX_NUMBER:
        return value
    raise ProtocolError(f"field {name!r}: expected an integer in 0..{MAX_NUMBER}")


def _b(value: Any, name: str) -> bool:
    if type(value) is bool:
        return value
    raise ProtocolError(f"field {name!r}: expected true or false")


def _text(value: Any, name: str, limit: int) -> str:
    if isinstance(value, str) and len(value) <= limit:
        return value
    raise ProtocolError(f"field {name!r}: expected a string of at most {limit} characters")


def _fields(body: Any, count: int, what: str) -> list[Any]:
    if type(body) is not list or len(body) != count:
        raise ProtocolError(f"{what}: expected an array of {count} fields")
    return body


def _entries(value: Any) -> tuple[Entry, ...]:
    if type(value) is not list or len(value) > MAX_ENTRIES_PER_APPEND:
        raise ProtocolError(f"field 'entries': expected at most {MAX_ENTRIES_PER_APPEND} entries")
    out: list[Entry] = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("field 'entries': an entry is [term, payload]")
        term, payload = item
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError("field 'entries': a payload is bytes of bounded size")
        out.append((_n(term, "term"), payload))
    return tuple(out)


def _items(value: Any) -> tuple[tuple[bytes, bytes], ...]:
    if type(value) is not list or len(value) > MAX_CHUNK_ITEMS:
        raise ProtocolError("field 'items': expected a bounded list")
    out: list[tuple[bytes, bytes]] = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("field 'items': an item is [key, value]")
        key, data = item
        if (
            type(key) is not bytes
            or type(data) is not bytes
            or len(key) > MAX_SNAPSHOT_KEY_BYTES
            or len(data) > MAX_CHUNK_BYTES
        ):
            raise ProtocolError("field 'items': keys and values are bytes of bounded size")
        out.append((key, data))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Vote:
    op: ClassVar[str] = "raft_vote"
    term: int
    last_index: int
    last_term: int
    pre: bool = False

    @classmethod
    def from_wire(cls, body: Any) -> Vote:
        term, last_index, last_term, pre = _fields(body, 4, cls.op)
        return cls(
            _n(term, "term"),
            _n(last_index, "last_index"),
            _n(last_term, "last_term"),
            _b(pre, "pre"),
        )

    def to_wire(self) -> list[Any]:
        return [self.term, self.last_index, self.last_term, self.pre]


@dataclass(frozen=True, slots=True)
class VoteReply:
    op: ClassVar[str] = "raft_vote_reply"
    term: int
    granted: bool
    pre: bool = False

    @classmethod
    def from_wire(cls, body: Any) -> VoteReply:
        term, granted, pre = _fields(body, 3, cls.op)
        return cls(_n(term, "term"), _b(granted, "granted"), _b(pre, "pre"))

    def to_wire(self) -> list[Any]:
        return [self.term, self.granted, self.pre]


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
    def from_wire(cls, body: Any) -> Append:
        term, prev_index, prev_term, entries, commit, seq, addr = _fields(body, 7, cls.op)
        return cls(
            _n(term, "term"),
            _n(prev_index, "prev_index"),
            _n(prev_term, "prev_term"),
            _entries(entries),
            _n(commit, "commit"),
            _n(seq, "seq"),
            _text(addr, "leader_addr", MAX_ADDR),
        )

    def to_wire(self) -> list[Any]:
        # Entries are (term, payload) tuples: msgpack packs them as arrays as they are.
        return [
            self.term,
            self.prev_index,
            self.prev_term,
            self.entries,
            self.commit,
            self.seq,
            self.leader_addr,
        ]


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
    def from_wire(cls, body: Any) -> AppendReply:
        term, success, match, seq, addr = _fields(body, 5, cls.op)
        return cls(
            _n(term, "term"),
            _b(success, "success"),
            _n(match, "match"),
            _n(seq, "seq"),
            _text(addr, "addr", MAX_ADDR),
        )

    def to_wire(self) -> list[Any]:
        return [self.term, self.success, self.match, self.seq, self.addr]


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
    def from_wire(cls, body: Any) -> Snapshot:
        term, index, index_term, offset, items, done, seq, addr = _fields(body, 8, cls.op)
        return cls(
            _n(term, "term"),
            _n(index, "index"),
            _n(index_term, "index_term"),
            _n(offset, "offset"),
            _items(items),
            _b(done, "done"),
            _n(seq, "seq"),
            _text(addr, "leader_addr", MAX_ADDR),
        )

    def to_wire(self) -> list[Any]:
        return [
            self.term,
            self.index,
            self.index_term,
            self.offset,
            self.items,
            self.done,
            self.seq,
            self.leader_addr,
        ]


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
    def from_wire(cls, body: Any) -> SnapshotReply:
        term, index, offset, done, seq = _fields(body, 5, cls.op)
        return cls(
            _n(term, "term"),
            _n(index, "index"),
            _n(offset, "offset"),
            _b(done, "done"),
            _n(seq, "seq"),
        )

    def to_wire(self) -> list[Any]:
        return [self.term, self.index, self.offset, self.done, self.seq]


@dataclass(frozen=True, slots=True)
class Applied:
    """An apply hint: ``hint`` is packed ``zdf.metastore.hints.ApplyHint`` (checked there)."""

    op: ClassVar[str] = "raft_applied"
    term: int
    hint: bytes

    @classmethod
    def from_wire(cls, body: Any) -> Applied:
        term, hint = _fields(body, 2, cls.op)
        if type(hint) is not bytes or len(hint) > MAX_CHUNK_BYTES:
            raise ProtocolError("field 'hint': expected bytes of bounded size")
        return cls(_n(term, "term"), hint)

    def to_wire(self) -> list[Any]:
        return [self.term, self.hint]


Message = Vote | VoteReply | Append | AppendReply | Snapshot | SnapshotReply | Applied
MESSAGES: dict[str, Any] = {
    c.op: c for c in (Vote, VoteReply, Append, AppendReply, Snapshot, SnapshotReply, Applied)
}


def parse_message(op: Any, body: Any) -> Message:
    cls = MESSAGES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"unknown peer message {op!r}")
    return cls.from_wire(body)  # type: ignore[no-any-return]
