"""Apply hints: the leader's write set for entries it applied, so followers need not run them.

Theory of operation. Every replica applies every committed command, and on the
hot path that is most of a follower's CPU: parse the command, read the key's
record and the request's dedupe record, build the new record, the watch event
and the dedupe record. After the leader has applied a batch of committed
entries it knows exactly what they wrote -- the staged key-values, the lease
changes and the counters after them -- so it sends that write set to its
followers as a *hint* (the ``raft_applied`` peer message). The hint waits for
the next message to each follower -- the append that tells it these entries
are committed -- and goes in the same ZeroMQ message, just before it.

A follower uses a hint only when it lines up exactly: its state is where the
batch starts (applied index ``first - 1`` and the same revision) and its log
holds the same entries (the entry at ``last`` has the hint's term, so by Raft's
Log Matching every entry before it matches too). It then writes the hint's
records in one batch instead of executing the commands: the same bytes, so the
same state. Otherwise -- no hint, a late one, one that does not line up, a
malformed one -- it applies the commands itself, as before. A hint never
decides *what* is committed (the log does), only saves recomputing what
committed entries did; and it may only touch state-machine keys, never the Raft
log or the counters, which the follower writes itself from the hint's fields.

Wire form (the payload of ``raft_applied``), one msgpack array::

    [first, last, last_term, revision_before,
     [key, value or nil, key, value or nil, ...],   # in the order the leader staged them
     [[lease id, ttl, deadline] or [lease id], ...],   # [id]: the lease went
     [revision, compact_revision, lease_next], dedupe_floor]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zdf.errors import ProtocolError
from zdf.metastore import keys
from zdf.metastore.apply import Counters, LeaseInfo
from zdf.wire.codec import packb, unpackb

MAX_HINT_WRITES = 8192
"""A batch that wrote more (a compaction, a big txn) is not hinted: followers run it."""

HINT_PREFIXES = (keys.DATA, keys.LEASE, keys.ATTACH, keys.HISTORY, keys.DEDUPE, keys.DEDUPE_AGE)
"""The state-machine keys a hint may write (not the meta counters, not the Raft log)."""

_MAX = 2**64 - 1

_ALLOWED = frozenset(prefix[0] for prefix in HINT_PREFIXES)


@dataclass(frozen=True, slots=True)
class ApplyHint:
    first: int
    last: int
    last_term: int
    revision_before: int
    writes: list[bytes | None]
    """Flat: key, value (None: a delete), key, value... Checked by ``write_to``."""
    leases: dict[int, LeaseInfo | None]
    counters: Counters
    dedupe_floor: int

    def pack(self) -> bytes:
        leases = [
            [lease_id] if info is None else [lease_id, info.ttl, info.deadline]
            for lease_id, info in self.leases.items()
        ]
        c = self.counters
        return packb(
            [
                self.first,
                self.last,
                self.last_term,
                self.revision_before,
                self.writes,
                leases,
                [c.revision, c.compact_revision, c.lease_next],
                self.dedupe_floor,
            ]
        )

    @classmethod
    def unpack(cls, data: bytes) -> ApplyHint:
        """Parse and check a hint (``ProtocolError`` for anything malformed; the writes
        are checked as they are written, by ``write_to``)."""
        body = unpackb(data)
        if type(body) is not list or len(body) != 8:
            raise ProtocolError("apply hint: expected an array of 8 fields")
        first, last, last_term, before, writes, leases, counters, floor = body
        if not (_n(first) and _n(last) and _n(last_term) and _n(before) and _n(floor)):
            raise ProtocolError("apply hint: indexes and counters are integers")
        if not 0 < first <= last:
            raise ProtocolError("apply hint: empty range")
        return cls(
            first,
            last,
            last_term,
            before,
            _writes(writes),
            _leases(leases),
            _counters(counters),
            floor,
        )

    def write_to(self, batch: Any) -> list[bytes]:
        """Put the writes into a LevelDB write batch; return the packed watch events.

        Raises ``ProtocolError`` (the batch must then be dropped) for a write that is
        not bytes to a state-machine key."""
        events: list[bytes] = []
        writes = iter(self.writes)
        history = keys.HISTORY[0]
        try:
            for key, value in zip(writes, writes, strict=True):
                first = key[0]  # type: ignore[index]
                if first not in _ALLOWED:
                    raise ProtocolError("apply hint: a write must be to a state-machine key")
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                    if first == history:
                        events.append(value)
        except (TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"apply hint: bad write ({type(exc).__name__})") from None
        return events


def _n(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX


def _writes(value: Any) -> list[bytes | None]:
    if type(value) is not list or len(value) > 2 * MAX_HINT_WRITES or len(value) % 2:
        raise ProtocolError("apply hint: writes must be a bounded list of key, value pairs")
    return value


def _leases(value: Any) -> dict[int, LeaseInfo | None]:
    if type(value) is not list:
        raise ProtocolError("apply hint: leases must be a list")
    out: dict[int, LeaseInfo | None] = {}
    for item in value:
        if type(item) is not list or not item or not _n(item[0]):
            raise ProtocolError("apply hint: a lease is [id] or [id, ttl, deadline]")
        if len(item) == 1:
            out[item[0]] = None
            continue
        if len(item) != 3 or not all(type(x) in (int, float) for x in item[1:]):
            raise ProtocolError("apply hint: a lease is [id] or [id, ttl, deadline]")
        out[item[0]] = LeaseInfo(item[0], float(item[1]), float(item[2]))
    return out


def _counters(value: Any) -> Counters:
    if type(value) is not list or len(value) != 3 or not all(_n(x) for x in value):
        raise ProtocolError("apply hint: counters are [revision, compact, lease_next]")
    return Counters(value[0], value[1], value[2])


MAX_HINTS = 256
"""Hints a follower keeps for entries it has not applied yet (beyond: it runs them)."""


class HintInbox:
    """A follower's hints by first index, and the rule for when one may be used."""

    def __init__(self, limit: int = MAX_HINTS) -> None:
        self.limit = limit
        self.bad = 0
        """Malformed hints received (and dropped)."""
        self._hints: dict[int, ApplyHint] = {}

    def __bool__(self) -> bool:
        return bool(self._hints)

    def add(self, packed: bytes, applied: int) -> None:
        try:
            hint = ApplyHint.unpack(packed)
        except ProtocolError:
            self.bad += 1
            return
        if hint.first > applied and len(self._hints) < self.limit:
            self._hints[hint.first] = hint

    def take(self, start: int, top: int, term_at: Callable[[int], int | None]) -> ApplyHint | None:
        """The hint for entries ``start..`` if they are all committed and written here
        (``top``) and the log holds the very entries it was made from."""
        hint = self._hints.pop(start, None)
        if hint is None or hint.last > top or term_at(hint.last) != hint.last_term:
            return None
        return hint

    def stop_before(self, start: int, stop: int) -> int:
        """Where to end a batch run from ``start`` so that the next hint still lines up."""
        return min([stop, *(i - 1 for i in self._hints if start < i <= stop)])

    def forget(self, applied: int) -> None:
        """Drop the hints of entries applied already (run, or from a snapshot)."""
        if self._hints:
            self._hints = {i: h for i, h in self._hints.items() if i > applied}

    def clear(self) -> None:
        self._hints.clear()
