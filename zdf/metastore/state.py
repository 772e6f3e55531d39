"""The metastore's state machine: commands applied in log order over LevelDB.

``MetaState`` owns one LevelDB. ``apply_batch`` applies ``(index, command)``
pairs in order, exactly once: entries at or below the applied index are
skipped (a log replayed after a crash), a gap is a bug and raises. The applied
index and the revision counters are written in the *same* ``WriteBatch`` as the
changes they describe, so a crash can never leave them disagreeing. With
``sync=True`` the batch is fsynced before ``apply_batch`` returns; the
single-replica server acknowledges a write only after that.

A command may carry a client's request id (``req``) and the leader's clock
(``ts``, ms): the result of the first entry with that id is stored with the
state, and a later entry with the same id (a client's retry) returns the
stored result instead of applying again, for ``DEDUPE_WINDOW_MS``. Both the
lookup and the cleanup depend only on the entries, so replicas agree. The
cleanup scan is skipped while nothing can be old enough to go: ``MetaState``
keeps a lower bound of the stamps in the age index (``_dedupe_floor``), so a
group commit costs no LevelDB iterator when there is nothing to forget.

The leader already holds each of its commands parsed (it built them from the
request); ``apply_batch`` takes them in ``parsed`` so that the leader does not
decode and validate its own entries a second time. Followers parse the log.

The Raft log lives in the same LevelDB (``zdf.metastore.raft.storage``), so a
synced log append also makes every earlier unsynced state write durable.
Reads (``get``, ``range``, ``history``) see applied state only. LevelDB is not
fork-safe: never fork while a ``MetaState`` is open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plyvel

from zdf.errors import CompactedError, ProtocolError, ZdfError, from_wire
from zdf.files import private_dir
from zdf.metastore import keys
from zdf.metastore.apply import Applier, Counters, LeaseInfo
from zdf.metastore.commands import MAX_REQUEST_ID_BYTES, Command, parse_command
from zdf.metastore.hints import MAX_HINT_WRITES, ApplyHint
from zdf.metastore.kv import Event, KeyValue
from zdf.metastore.staging import Staging
from zdf.wire.codec import packb, unpackb

DEDUPE_WINDOW_MS = 120_000
"""How long a client may retry a write and still get the first attempt's result."""

WRITE_BUFFER_BYTES = 32 << 20
"""LevelDB's memtable: every write lands in the log, the state, the history and the
dedupe records, and raft log entries die soon after; a larger memtable means
fewer flushes and background compactions per write (at most this much WAL is
replayed when a replica starts)."""
BLOOM_FILTER_BITS = 10
"""Per key: a client's request id is looked up on every write and is nearly always
new, and a bloom filter answers such a miss without reading table blocks."""

Result = dict[str, Any] | ZdfError | None
"""A command's reply body, the error it deterministically failed with, or None if skipped."""


@dataclass(slots=True)
class BatchResult:
    results: list[Result] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    """Every change of the batch in revision order (the new watch history)."""
    hint: ApplyHint | None = None
    """What the batch wrote, for followers (when asked for; see ``zdf.metastore.hints``)."""


@dataclass(frozen=True, slots=True)
class HistoryChunk:
    events: list[Event]
    next_revision: int
    """The first revision not covered by this chunk: resume from here."""


class MetaState:
    def __init__(self, path: str) -> None:
        private_dir(path)
        self.path = path
        self._db: Any = plyvel.DB(
            path,
            create_if_missing=True,
            write_buffer_size=WRITE_BUFFER_BYTES,
            bloom_filter_bits=BLOOM_FILTER_BITS,
        )
        self.reload()

    @property
    def db(self) -> Any:
        """The LevelDB handle (the Raft log is kept in the same database)."""
        return self._db

    def reload(self) -> None:
        """Re-read the counters and leases (after a snapshot replaced the state)."""
        self.applied_index = self._meta(keys.META_APPLIED, 0)
        self._counters = Counters(
            revision=self._meta(keys.META_REVISION, 0),
            compact_revision=self._meta(keys.META_COMPACT, 0),
            lease_next=self._meta(keys.META_LEASE_NEXT, 1),
        )
        self._leases: dict[int, LeaseInfo] = {}
        for key, raw in self._db.iterator(prefix=keys.LEASE):
            ttl, deadline = unpackb(raw)
            lease_id = keys.lease_id_of(key)
            self._leases[lease_id] = LeaseInfo(lease_id, float(ttl), float(deadline))
        self._dedupe_floor = _oldest_stamp(self._db)

    def _meta(self, key: bytes, default: int) -> int:
        raw = self._db.get(key)
        return default if raw is None else keys.from_u64(raw)

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    # -- counters ------------------------------------------------------------------
    @property
    def revision(self) -> int:
        return self._counters.revision

    @property
    def compact_revision(self) -> int:
        return self._counters.compact_revision

    @property
    def leases(self) -> Mapping[int, LeaseInfo]:
        return self._leases

    # -- applying ----------------------------------------------------------------------
    def apply(self, index: int, command: dict[str, Any], *, sync: bool = False) -> Result:
        """Apply one command (see ``apply_batch``)."""
        return self.apply_batch([(index, command)], sync=sync).results[0]

    def apply_batch(
        self,
        entries: Sequence[tuple[int, dict[str, Any]]],
        *,
        sync: bool,
        parsed: Mapping[int, Command] | None = None,
        hint_term: int | None = None,
    ) -> BatchResult:
        """Apply entries in order in one atomic (and with ``sync`` durable) write.

        ``parsed`` may hold, by index, the command each dict parses to (the
        leader's own proposals), sparing the parse; it must be exactly that.
        With ``hint_term`` (the term of the last entry) the result carries the
        batch's write set as an ``ApplyHint`` for followers.
        """
        staging = Staging(self._db)
        counters = Counters(
            self._counters.revision, self._counters.compact_revision, self._counters.lease_next
        )
        applier = Applier(staging, counters, self._leases)
        out = BatchResult()
        applied = self.applied_index
        newest_stamp = -1
        floor = self._dedupe_floor
        known = parsed or {}
        for index, command in entries:
            if index <= applied:
                out.results.append(None)
                continue
            if index != applied + 1:
                raise ValueError(f"log gap: index {index} after applied index {applied}")
            applied = index
            req, stamp = _request_of(command)
            if req is not None:
                newest_stamp = max(newest_stamp, stamp)
                floor = min(floor, stamp)
                earlier = _earlier_result(staging, req, stamp)
                if earlier is not None:
                    out.results.append(earlier)
                    continue
            result: Result
            try:
                cmd = known.get(index)
                result = applier.apply(parse_command(command) if cmd is None else cmd)
            except ZdfError as exc:
                result = exc
            except Exception as exc:  # a hostile entry must not stop the replica
                result = ZdfError(f"bad command: {type(exc).__name__}")
            out.results.append(result)
            if req is not None:
                _remember(staging, req, stamp, result)
        if applied == self.applied_index:
            return out
        if newest_stamp >= 0:
            before = newest_stamp - 2 * DEDUPE_WINDOW_MS
            if before > floor:  # else nothing is old enough: no scan
                _forget_old(staging, before)
                floor = before
        writes = staging.flat() if hint_term is not None else None
        revision_before = self._counters.revision
        first = self.applied_index + 1
        staging.commit(_meta_records(applied, counters), sync=sync)
        # Only now, with the batch on disk, does the in-memory view move on.
        self._moved_on(applied, counters, floor, applier.lease_changes)
        out.events = applier.events
        if hint_term is not None and writes is not None and len(writes) <= 2 * MAX_HINT_WRITES:
            out.hint = ApplyHint(
                first,
                applied,
                hint_term,
                revision_before,
                writes,
                dict(applier.lease_changes),
                counters,
                floor,
            )
        return out

    def apply_hint(self, hint: ApplyHint, *, events: bool = True) -> list[Event] | None:
        """Write what the leader says entries ``first..last`` wrote, if it lines up.

        The caller checked that its log holds those very entries; here the state
        must be exactly where the batch starts. Returns the batch's watch events
        (none unless ``events``), or None (nothing written) when the hint does not
        fit or is malformed: then apply the entries.
        """
        if hint.first != self.applied_index + 1 or hint.revision_before != self.revision:
            return None
        batch = self._db.write_batch(sync=False)
        try:
            packed = hint.write_to(batch)
        except ProtocolError:
            return None
        c = hint.counters
        for key, value in _meta_records(hint.last, c).items():
            batch.put(key, value)
        batch.write()
        counters = Counters(c.revision, c.compact_revision, c.lease_next)
        self._moved_on(hint.last, counters, hint.dedupe_floor, hint.leases)
        return [Event.unpack(raw) for raw in packed] if events else []

    def _moved_on(
        self,
        applied: int,
        counters: Counters,
        dedupe_floor: int,
        lease_changes: Mapping[int, LeaseInfo | None],
    ) -> None:
        """The in-memory view after a batch is written (never before)."""
        self.applied_index = applied
        self._counters = counters
        self._dedupe_floor = dedupe_floor
        for lease_id, info in lease_changes.items():
            if info is None:
                self._leases.pop(lease_id, None)
            else:
                self._leases[lease_id] = info

    # -- reads -----------------------------------------------------------------------
    def get(self, key: bytes) -> KeyValue | None:
        raw = self._db.get(keys.data_key(key))
        return None if raw is None else KeyValue.unpack(key, raw)

    def range(self, prefix: bytes, limit: int = 0) -> tuple[list[KeyValue], bool]:
        """Keys starting with ``prefix`` in key order, at most ``limit`` (0: all); and 'more'."""
        found: list[KeyValue] = []
        with self._db.iterator(prefix=keys.data_key(prefix)) as it:
            for db_key, raw in it:
                if limit and len(found) == limit:
                    return found, True
                found.append(KeyValue.unpack(keys.user_key(db_key), raw))
        return found, False

    def lease_keys(self, lease_id: int) -> list[bytes]:
        prefix = keys.attach_prefix(lease_id)
        with self._db.iterator(prefix=prefix, include_value=False) as it:
            return [k[len(prefix) :] for k in it]

    def history(
        self, start: int, prefix: bytes = b"", *, max_events: int = 1000, max_scan: int = 10_000
    ) -> HistoryChunk:
        """Events with revision >= ``start`` on keys under ``prefix``.

        A chunk never splits a revision, so a watcher that resumes from
        ``next_revision`` sees neither a gap nor a duplicate. Raises
        ``CompactedError`` when ``start`` is older than the kept history.
        """
        if start < self.compact_revision:
            raise CompactedError(
                f"revision {start} has been compacted (history starts at {self.compact_revision})",
                compact_revision=self.compact_revision,
            )
        events: list[Event] = []
        scanned = 0
        last_revision = start - 1
        first = keys.history_key(max(start, 0), 0)
        with self._db.iterator(start=first, stop=keys.prefix_end(keys.HISTORY)) as it:
            for db_key, raw in it:
                revision = keys.history_revision(db_key)
                if revision != last_revision and (scanned >= max_scan or len(events) >= max_events):
                    return HistoryChunk(events, revision)
                last_revision = revision
                scanned += 1
                event = Event.unpack(raw)
                if event.key.startswith(prefix):
                    events.append(event)
        return HistoryChunk(events, self.revision + 1)


def _meta_records(applied: int, counters: Counters) -> dict[bytes, bytes]:
    """The applied index and counters, written in the same batch as the changes."""
    return {
        keys.META_APPLIED: keys.u64(applied),
        keys.META_REVISION: keys.u64(counters.revision),
        keys.META_COMPACT: keys.u64(counters.compact_revision),
        keys.META_LEASE_NEXT: keys.u64(counters.lease_next),
    }


# -- request dedupe ---------------------------------------------------------------------
def _request_of(command: Any) -> tuple[bytes | None, int]:
    """The request id and stamp of a command, if it carries valid ones (exact types:
    a command is a msgpack map, or the leader's own proposal built from one)."""
    if not isinstance(command, dict):
        return None, 0
    req, stamp = command.get("req"), command.get("ts")
    if (
        type(req) is bytes
        and type(stamp) is int
        and 0 < len(req) <= MAX_REQUEST_ID_BYTES
        and 0 <= stamp < 2**63
    ):
        return req, stamp
    return None, 0


def _earlier_result(staging: Staging, req: bytes, stamp: int) -> Result:
    raw = staging.get(keys.dedupe_key(req))
    if raw is None:
        return None
    first_stamp, stored = unpackb(raw)
    if stamp - first_stamp > DEDUPE_WINDOW_MS:
        return None
    if "err" in stored:
        return from_wire(stored["err"])
    result: dict[str, Any] = stored["ok"]
    return result


def _remember(staging: Staging, req: bytes, stamp: int, result: Result) -> None:
    stored = {"err": result.to_wire()} if isinstance(result, ZdfError) else {"ok": result}
    staging.put(keys.dedupe_key(req), packb([stamp, stored]))
    staging.put(keys.dedupe_age_key(stamp, req), b"")


def _oldest_stamp(db: Any) -> int:
    """The stamp of the oldest dedupe record (a huge number when there is none)."""
    with db.iterator(prefix=keys.DEDUPE_AGE, include_value=False) as it:
        for key in it:
            return keys.from_u64(key[len(keys.DEDUPE_AGE) : len(keys.DEDUPE_AGE) + 8])
    return 2**63


def _forget_old(staging: Staging, before_stamp: int) -> None:
    if before_stamp <= 0:
        return
    stop = keys.DEDUPE_AGE + keys.u64(before_stamp)
    for key, _ in list(staging.scan(keys.DEDUPE_AGE, stop)):
        staging.delete(key)
        staging.delete(keys.dedupe_key(key[len(keys.DEDUPE_AGE) + 8 :]))
