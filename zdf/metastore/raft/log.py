"""The Raft log and hard state: in memory for the core, persisted by ``flush``.

Theory of operation: ``RaftLog`` is what the consensus core reads and edits --
the current term, the vote, and the entries after the last snapshot (the log
start, ``snap_index``/``snap_term``). Every edit goes to memory at once and is
remembered as *pending*; ``flush(sync=True)`` writes all pending edits in one
LevelDB ``WriteBatch`` (term, vote, truncation and new entries together) and
only then may the node send a message that depends on them. ``persisted_index``
says how far the log is durable; a leader counts itself towards a commit only
up to there.

A leader may also write its new entries without syncing them
(``flush(sync=False)``; Raft thesis 10.2.1: a leader may commit an entry before
it is on its own disk once a majority of followers have it on theirs). They
are then *written* (``written_index``: in LevelDB, so the state machine may
apply them -- LevelDB keeps writes in order, so a state change never survives
a crash that its log entries do not) but *unsynced* until a later synced
flush, which any node that is no longer leader does before it answers anyone.

The base class keeps everything in memory (the simulation tests use it);
``LevelLog`` loads and stores it under the ``e``/``r`` keys of the replica's
LevelDB, next to the state machine (see ``zdf.metastore.keys``).

An entry is ``(term, payload)``: the payload is the msgpack of a state-machine
command, kept as bytes so that the log never re-encodes what it forwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zdf.metastore import keys
from zdf.wire.codec import packb, unpackb

Entry = tuple[int, bytes]
"""(term, payload)"""

NO_VOTE = ""


class RaftLog:
    def __init__(self) -> None:
        self.term = 0
        self.vote = NO_VOTE
        self.snap_index = 0
        self.snap_term = 0
        self._entries: list[Entry] = []  # index snap_index + 1 + i
        self._dirty_hard = False
        self._truncated = False
        self._rewrite_from: int | None = None  # entries from here on differ from the disk
        self.persisted_index = 0
        self.written_index = 0
        """Entries up to here are stored (synced up to ``persisted_index`` only)."""
        self.stats_flushes = 0
        """Writes that carried new entries (a group commit is one)."""
        self.stats_syncs = 0
        """Synced writes (a leader that leaves its entries unsynced does fewer)."""

    # -- reading ------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        return self.snap_index + 1

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1][0] if self._entries else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None if it is compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        if self.snap_index < index <= self.last_index:
            return self._entries[index - self.snap_index - 1][0]
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snap_index - 1]

    def slice(self, start: int, stop: int, max_bytes: int) -> list[Entry]:
        """Entries ``start`` .. ``stop - 1`` (at least one, at most ``max_bytes`` more)."""
        lo = start - self.snap_index - 1
        hi = min(stop, self.last_index + 1) - self.snap_index - 1
        out: list[Entry] = []
        size = 0
        for i in range(max(lo, 0), hi):
            entry = self._entries[i]
            size += len(entry[1]) + 16
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def first_index_of_term(self, index: int) -> int:
        """The first index at or before ``index`` whose term is that of ``index``."""
        term = self.term_at(index)
        while index > self.first_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    @property
    def dirty(self) -> bool:
        """Edits not yet written (hard state, truncation or entries)."""
        return self._dirty_hard or self._truncated or self._rewrite_from is not None

    @property
    def only_entries_dirty(self) -> bool:
        """The only unwritten edits are new entries (what a leader may write unsynced)."""
        return not self._dirty_hard and not self._truncated

    @property
    def unsynced(self) -> bool:
        """Entries are written but not yet synced (see ``flush(sync=False)``)."""
        return self.written_index > self.persisted_index

    # -- editing (memory now, disk at flush) -------------------------------------
    def set_hard_state(self, term: int, vote: str) -> None:
        if (term, vote) != (self.term, self.vote):
            self.term, self.vote = term, vote
            self._dirty_hard = True

    def append(self, entries: Iterable[Entry]) -> None:
        before = self.last_index
        self._entries.extend(entries)
        if self.last_index > before:
            self._mark(before + 1)

    def _mark(self, index: int) -> None:
        self._rewrite_from = index if self._rewrite_from is None else min(self._rewrite_from, index)

    def truncate_from(self, index: int) -> None:
        """Drop entries ``index`` and after (only on a real conflict with the leader)."""
        if index > self.last_index:
            return
        assert index > self.snap_index, "cannot truncate committed (snapshotted) entries"
        del self._entries[index - self.snap_index - 1 :]
        self._truncated = True
        self._mark(index)
        self.persisted_index = min(self.persisted_index, index - 1)
        self.written_index = min(self.written_index, index - 1)

    def flush(self, *, sync: bool = True) -> None:
        """Write every pending edit in one batch; with ``sync``, make all of the log durable.

        Only a leader flushes without ``sync``, and only new entries (see the
        module docstring): ``written_index`` moves on, ``persisted_index`` stays.
        """
        if not sync and not self.only_entries_dirty:
            raise AssertionError("raft log: term, vote and truncation are always synced")
        if self._rewrite_from is not None:
            self.stats_flushes += 1
        self.stats_syncs += sync
        self._write_pending(sync)
        self._dirty_hard = False
        self._truncated = False
        self._rewrite_from = None
        self.written_index = self.last_index
        if sync:
            self.persisted_index = self.last_index

    def _write_pending(self, sync: bool) -> None:
        """Subclasses write the pending edits; the in-memory log has nothing to do."""

    # -- compaction and snapshots ---------------------------------------------------
    def compact(self, index: int) -> None:
        """Forget entries up to ``index`` (already applied; the state machine holds them)."""
        if index <= self.snap_index or index > self.persisted_index:
            return
        term = self.term_at(index)
        assert term is not None
        del self._entries[: index - self.snap_index]
        self.snap_index, self.snap_term = index, term
        self._write_compaction(index)

    def _write_compaction(self, index: int) -> None:
        pass

    def reset_to_snapshot(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot at ``index`` (the caller wrote it to disk)."""
        self._entries.clear()
        self.snap_index, self.snap_term = index, term
        self.persisted_index = self.written_index = index
        self._truncated = False
        self._rewrite_from = None


class LevelLog(RaftLog):
    """The Raft log in the replica's LevelDB (the ``e`` and ``r`` keys)."""

    def __init__(self, db: Any, *, applied_index: int = 0) -> None:
        super().__init__()
        self._db = db
        self.term = _int(db.get(keys.RAFT_TERM))
        self.vote = (db.get(keys.RAFT_VOTE) or b"").decode()
        self.snap_index = _int(db.get(keys.RAFT_SNAP_INDEX))
        self.snap_term = _int(db.get(keys.RAFT_SNAP_TERM))
        expected = self.snap_index + 1
        with db.iterator(prefix=keys.LOG) as it:
            for key, raw in it:
                index = keys.from_u64(key[len(keys.LOG) :])
                if index < expected:
                    continue  # left behind by a compaction that was cut short
                if index != expected:
                    break  # never written contiguously: ignore the tail
                term, payload = unpackb(raw)
                self._entries.append((int(term), bytes(payload)))
                expected += 1
        if applied_index > self.last_index:
            # A state machine ahead of the log (written before the log existed).
            self._entries.clear()
            self.snap_index, self.snap_term = applied_index, self.term
        self.persisted_index = self.written_index = self.last_index

    def _write_pending(self, sync: bool) -> None:
        if not self.dirty and not (sync and self.unsynced):
            return
        # With only unsynced entries to make durable, the batch is empty: LevelDB
        # still syncs its write-ahead log, which holds every earlier write.
        batch = self._db.write_batch(sync=sync)
        if self._dirty_hard:
            batch.put(keys.RAFT_TERM, keys.u64(self.term))
            batch.put(keys.RAFT_VOTE, self.vote.encode())
        if self._truncated:
            # Keys beyond the new end go; the rest is overwritten below.
            with self._db.iterator(
                start=keys.log_key(self.last_index + 1),
                stop=keys.prefix_end(keys.LOG),
                include_value=False,
            ) as it:
                for key in it:
                    batch.delete(key)
        if self._rewrite_from is not None:
            for index in range(max(self._rewrite_from, self.first_index), self.last_index + 1):
                term, payload = self.entry(index)
                batch.put(keys.log_key(index), packb([term, payload]))
        batch.write()

    def _write_compaction(self, index: int) -> None:
        batch = self._db.write_batch(sync=False)
        batch.put(keys.RAFT_SNAP_INDEX, keys.u64(self.snap_index))
        batch.put(keys.RAFT_SNAP_TERM, keys.u64(self.snap_term))
        with self._db.iterator(
            start=keys.LOG, stop=keys.log_key(index + 1), include_value=False
        ) as it:
            for key in it:
                batch.delete(key)
        batch.write()


def _int(raw: bytes | None) -> int:
    return 0 if raw is None else keys.from_u64(raw)
