"""A sink's output file as the sink's durable state: locked, appended, folded back.

Theory of operation
-------------------
Everything a sink has told anyone (the coordinator: "DDL (t, v) arrived",
"written") is about rows already in its file, so the file itself is the sink's
write-ahead log. A restarted sink does not throw away what its predecessor wrote
after the last checkpoint (that would un-write rows the barrier already counted
on); it *folds* the file into its state instead: per table, the gtid of the
last row written (the sink drops replayed rows at or below it, so every row
lands exactly once) and the last DDL version this sink wrote. Only a torn last
row (a write cut short by SIGKILL) is cut off. The checkpoint (``length`` with
the per-table gtids at that length) only saves reading the whole file again.

One writer at a time: the file is ``flock``-ed for the life of the sink task.
A zombie (a sink whose executor was declared dead but whose worker still runs)
keeps its lock until it is stopped, and its replacement waits for the lock
before it reads the file. So a zombie's rows are either in the file before the
replacement folds it, or never written; the two never interleave.

Rows are written with ``pwrite`` at the sink's own length, in whole batches;
the page cache makes them survive a killed process (not a crashed host: no
fsync, which would cost more than the rest of the sink).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zdf.files import open_nofollow
from zdf.records import DATA, DDL, RECORD_DTYPE, SINK_DTYPE
from zdf.runtime.bench.latency import LatencyHistogram

READ_CHUNK_ROWS = 1 << 20
_RECORD_BYTES = np.dtype(f"V{RECORD_DTYPE.itemsize}")
_SINK_AS_BYTES = np.dtype(
    {
        "names": ["record", "sink_ts"],
        "formats": [_RECORD_BYTES, "<i8"],
        "offsets": [0, RECORD_DTYPE.itemsize],
        "itemsize": SINK_DTYPE.itemsize,
    }
)
"""A sink row seen as the record's bytes and ``sink_ts`` (``SINK_DTYPE`` is the record's
fields followed by ``sink_ts``): records are copied whole, not field by field."""

FOLD_BY_ROW = 8
"""Up to this many rows, ``SinkState.fold`` loops in Python (cheaper than numpy's set-up)."""


@dataclass
class SinkState:
    """Per table: the gtid of the last row taken (-1: none) and the last DDL version written."""

    tables: int
    length: int = 0
    records: int = 0
    last_gtid: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    ddl_written: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __post_init__(self) -> None:
        if len(self.last_gtid) != self.tables:
            self.last_gtid = np.full(self.tables, -1, np.int64)
        if len(self.ddl_written) != self.tables:
            self.ddl_written = np.zeros(self.tables, np.int64)

    def reset(self) -> None:
        self.length = self.records = 0
        self.last_gtid = np.full(self.tables, -1, np.int64)
        self.ddl_written = np.zeros(self.tables, np.int64)

    @property
    def resume_gtid(self) -> int:
        """Where to replay the stream from: no table has a row below it still to take."""
        return int(self.last_gtid.min()) + 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "records": self.records,
            "gtid": self.last_gtid.tolist(),
            "ddl": self.ddl_written.tolist(),
        }

    @classmethod
    def from_wire(cls, tables: int, data: dict[str, Any]) -> SinkState:
        state = cls(tables, int(data.get("length", 0)), int(data.get("records", 0)))
        gtid, ddl = data.get("gtid") or [], data.get("ddl") or []
        if len(gtid) == tables and len(ddl) == tables:
            state.last_gtid = np.asarray(gtid, np.int64)
            state.ddl_written = np.asarray(ddl, np.int64)
        else:  # no usable positions: fold the whole file
            state.reset()
        return state

    def advance(self, pieces: list[np.ndarray]) -> None:
        """Account for data rows just appended: each piece of one table, in gtid order."""
        for piece in pieces:
            t, gtid = int(piece["tid"][0]), int(piece["gtid"][-1])
            if gtid > self.last_gtid[t]:
                self.last_gtid[t] = gtid
            self.records += len(piece)
            self.length += len(piece) * SINK_DTYPE.itemsize

    def fold(self, rows: np.ndarray) -> None:
        """Account for rows found in (or just appended to) the file."""
        if not len(rows):
            return
        if len(rows) <= FOLD_BY_ROW:
            self._fold_rows(rows)
            return
        # ufunc.at is ~15x faster on contiguous operands than on a structured field.
        tid = rows["tid"].astype(np.intp)
        np.maximum.at(self.last_gtid, tid, np.ascontiguousarray(rows["gtid"]))
        ddl = rows["tp"] == DDL
        if ddl.any():
            np.maximum.at(self.ddl_written, tid[ddl], rows["schema_ver"][ddl].astype(np.int64))
        self.records += int(np.count_nonzero(rows["tp"] == DATA))
        self.length += rows.nbytes

    def _fold_rows(self, rows: np.ndarray) -> None:
        """``fold`` for a few rows (the DDLs a barrier writes): no vector set-up."""
        last_gtid, ddl_written = self.last_gtid, self.ddl_written
        fields = (rows[name].tolist() for name in ("tid", "gtid", "tp", "schema_ver"))
        for t, gtid, tp, v in zip(*fields, strict=True):
            if gtid > last_gtid[t]:
                last_gtid[t] = gtid
            if tp == DDL:
                if v > ddl_written[t]:
                    ddl_written[t] = v
            elif tp == DATA:
                self.records += 1
        self.length += rows.nbytes


class SinkFile:
    """The open, locked file; ``None`` from ``try_open`` while another sink holds it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        self.locked = False

    def try_lock(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.locked = True
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def recover(self, state: SinkState) -> int:
        """Fold every whole row after ``state.length`` into ``state``; cut a torn tail.

        Returns the ``sink_ts`` of the last row in the file (0 when empty)."""
        size = self.size()
        if size < state.length:  # the checkpoint is ahead of the file: it cannot be trusted
            state.reset()
        whole = size - (size - state.length) % SINK_DTYPE.itemsize
        if whole != size:
            self.truncate(whole)
        for rows in self.read(state.length, whole):
            state.fold(rows)
        return self.last_sink_ts(whole)

    def read(self, start: int, end: int) -> list[np.ndarray]:
        step = READ_CHUNK_ROWS * SINK_DTYPE.itemsize
        out = []
        for pos in range(start, end, step):
            data = os.pread(self.fd, min(step, end - pos), pos)
            out.append(np.frombuffer(data, SINK_DTYPE))
        return out

    def last_sink_ts(self, length: int) -> int:
        if length < SINK_DTYPE.itemsize:
            return 0
        raw = os.pread(self.fd, SINK_DTYPE.itemsize, length - SINK_DTYPE.itemsize)
        return int(np.frombuffer(raw, SINK_DTYPE)["sink_ts"][0])

    def append(self, pieces: list[np.ndarray], offset: int, sink_ts: int) -> np.ndarray:
        """Write ``pieces`` (RECORD_DTYPE) stamped ``sink_ts`` at ``offset``; the written rows.

        One ``pwrite`` for all of them; each piece is copied once, into the output."""
        n = sum(len(piece) for piece in pieces)
        out = np.empty(n, _SINK_AS_BYTES)
        record = out["record"]
        at = 0
        for piece in pieces:
            k = len(piece)
            record[at : at + k] = piece.view(_RECORD_BYTES)  # one copy of whole records
            at += k
        out["sink_ts"] = sink_ts
        out = out.view(SINK_DTYPE)
        view = out.view(np.uint8).data
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)
        return out


def file_summary(path: str) -> dict[str, Any]:
    """A finished sink file's figures, read back from the file (exact across restarts)."""
    rows = np.fromfile(path, SINK_DTYPE) if os.path.exists(path) else np.empty(0, SINK_DTYPE)
    data = rows[rows["tp"] == DATA]
    hist = LatencyHistogram()
    hist.add(data["sink_ts"] - data["ts"])
    return {
        "records": len(data),
        "ddls": int(np.count_nonzero(rows["tp"] == DDL)),
        "first_ts": int(rows["ts"].min()) if len(rows) else 0,
        "last_ts": int(rows["sink_ts"].max()) if len(rows) else 0,
        "bytes": rows.nbytes,
        "hist": hist,
    }
