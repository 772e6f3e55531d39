"""Snapshots: the state machine's keys at one applied index, sent in chunks.

There is no snapshot file: the state machine *is* a LevelDB, so a snapshot is a
LevelDB read snapshot of the state-machine keys (everything but the Raft log,
``keys.is_state_key``), taken at the leader's applied index, whose applied
index key travels inside it. The leader streams it to a follower that needs
entries the leader has compacted, one chunk in flight, each acknowledged with
the number of items the follower holds. The follower keeps the chunks in
memory and installs them with one synced ``WriteBatch`` that replaces its whole
state machine and its log, so a crash leaves either the old state or the new.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from zdf.metastore import keys

CHUNK_BYTES = 512 << 10
SENDER_TIMEOUT = 3.0


class SnapshotSender:
    """One snapshot on its way to one follower."""

    def __init__(self, db: Any, term_at: Any) -> None:
        self._snap = db.snapshot()
        raw = self._snap.get(keys.META_APPLIED)
        self.index = 0 if raw is None else keys.from_u64(raw)
        term = term_at(self.index)
        self.index_term = int(term) if term is not None else 0
        self._items: Iterator[tuple[bytes, bytes]] = (
            (k, v) for k, v in self._snap.iterator() if keys.is_state_key(k)
        )
        self.offset = 0
        self.chunk: list[tuple[bytes, bytes]] = []
        self.done = False
        self.last_activity = time.monotonic()

    @property
    def valid(self) -> bool:
        return self.index_term > 0 or self.index == 0

    def next_chunk(self) -> tuple[int, list[tuple[bytes, bytes]], bool]:
        """The next chunk: (its offset, its items, whether it is the last)."""
        self.offset += len(self.chunk)
        chunk: list[tuple[bytes, bytes]] = []
        size = 0
        for key, value in self._items:
            chunk.append((key, value))
            size += len(key) + len(value) + 8
            if size >= CHUNK_BYTES:
                break
        else:
            self.done = True
        self.chunk = chunk
        self.last_activity = time.monotonic()
        return self.offset, chunk, self.done

    def close(self) -> None:
        self._snap.close()


@dataclass(slots=True)
class SnapshotReceiver:
    """The chunks of one snapshot, received in order."""

    leader: str
    index: int
    index_term: int
    items: list[tuple[bytes, bytes]] = field(default_factory=list)

    def add(self, offset: int, items: tuple[tuple[bytes, bytes], ...]) -> bool:
        if offset != len(self.items):
            return False
        self.items.extend(items)
        return True


def install(db: Any, receiver: SnapshotReceiver) -> None:
    """Replace the state machine and the log by the snapshot, in one synced write."""
    batch = db.write_batch(sync=True)
    with db.iterator(include_value=False) as it:
        for key in it:
            if keys.is_state_key(key) or key.startswith(keys.LOG):
                batch.delete(key)
    for key, value in receiver.items:
        if keys.is_state_key(key):
            batch.put(key, value)
    batch.put(keys.META_APPLIED, keys.u64(receiver.index))
    batch.put(keys.RAFT_SNAP_INDEX, keys.u64(receiver.index))
    batch.put(keys.RAFT_SNAP_TERM, keys.u64(receiver.index_term))
    batch.write()
