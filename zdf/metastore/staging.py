"""Writes staged over a LevelDB, readable before they are committed.

A group commit applies many commands into one ``WriteBatch``, but a LevelDB
write batch cannot be read back, and command N+1 must see what command N
wrote (a txn compare after a put in the same batch). ``Staging`` keeps the
pending writes in a dict layered over the database: reads look at the dict
first, scans merge both in key order, and ``commit`` writes everything (plus
the meta counters) in one atomic, optionally synced, batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Staging:
    def __init__(self, db: Any) -> None:
        self._db = db
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        value: bytes | None = self._db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def scan(self, prefix: bytes, stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs under ``prefix`` (and below ``stop``), in key order.

        The staged keys are snapshotted when the scan starts; callers that
        write while scanning should materialise the scan first.
        """
        staged = sorted(
            k for k in self._writes if k.startswith(prefix) and (stop is None or k < stop)
        )
        writes = dict((k, self._writes[k]) for k in staged)
        i = 0
        iterator = (
            self._db.iterator(prefix=prefix)
            if stop is None
            else self._db.iterator(start=prefix, stop=stop)
        )
        with iterator as it:
            for key, value in it:
                while i < len(staged) and staged[i] < key:
                    pending = writes[staged[i]]
                    if pending is not None:
                        yield staged[i], pending
                    i += 1
                if i < len(staged) and staged[i] == key:
                    pending = writes[staged[i]]
                    i += 1
                    if pending is not None:
                        yield key, pending
                    continue
                yield key, value
        for k in staged[i:]:
            pending = writes[k]
            if pending is not None:
                yield k, pending

    def flat(self) -> list[bytes | None]:
        """The staged writes as key, value (None: a delete), ..., in the order first staged."""
        return [x for item in self._writes.items() for x in item]

    def commit(self, meta: dict[bytes, bytes], *, sync: bool) -> None:
        """Write the staged changes and ``meta`` atomically; nothing is written on error."""
        batch = self._db.write_batch(sync=sync)
        for key, value in self._writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for key, value in meta.items():
            batch.put(key, value)
        batch.write()
        self._writes.clear()

    def __len__(self) -> int:
        return len(self._writes)
