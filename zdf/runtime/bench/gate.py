"""``TableGate``: the per-table DDL gate in front of a sink's file (pure, no I/O).

Theory of operation
-------------------
Per table the gate is *open* or *stopped at DDL version v*. ``admit(rows)``
splits a batch (vectorised; a Python loop only over the tables that stop):

* rows of a stopped table are held, in order;
* for an open table, the data rows before its first DDL (t, v) with v above
  ``written[t]`` pass, the DDL is reported as a ``Stop`` and the table stops
  there: the rows after it are held;
* a DDL at or below ``written[t]`` (one already written somewhere: a replay)
  does not stop its table.

``release(t, v)`` records that every DDL of t up to v is written; a table
stopped at or below v opens and its held rows are admitted again, up to its
next stop. What passes is data only (a DDL row is written by its one writer,
``zdf.runtime.bench.barrier``). Per table, everything of versions < v passes
before the stop at v, and nothing of versions >= v before its release: that is
the barrier, as long as the caller releases only DDLs really written.

Other tables keep flowing while one is stopped: order is per table.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from zdf.records import DDL


@dataclass(frozen=True, slots=True)
class Stop:
    """Table ``table`` stopped at DDL ``version``; ``row`` is that DDL record (one row).

    ``row`` is a view of the batch it came in: a caller that keeps it copies it."""

    table: int
    version: int
    row: np.ndarray


class _Held:
    """Held rows of one table (a view of a batch) and where their DDLs are in them."""

    __slots__ = ("ddls", "rows", "versions")

    def __init__(self, rows: np.ndarray, ddls: list[int], versions: list[int]) -> None:
        self.rows = rows
        self.ddls = ddls  # positions in ``rows``
        self.versions = versions


class TableGate:
    """The gates of ``tables`` tables (see the module docstring).

    Batches are cut into *runs* of one table (a binlog round is the producers'
    batches one after the other, so a batch is a few long runs): the work per
    batch is a few vectorised passes plus a Python step per run, and what passes
    or is held are views of the batch, never copies. Held runs keep the positions
    of their DDLs, so a release is slicing only. Passed pieces are each of one
    table, in order, data only.
    """

    def __init__(self, tables: int) -> None:
        self.stopped = [False] * tables
        self.stopped_at = [0] * tables  # the DDL version a stopped table waits at
        self.written = [0] * tables  # highest DDL version known written
        self.held: list[deque[_Held]] = [deque() for _ in range(tables)]
        self.held_rows = 0

    @property
    def tables(self) -> int:
        return len(self.held)

    def waiting(self) -> list[tuple[int, int]]:
        """``(table, version)`` of every stopped table."""
        return [(t, self.stopped_at[t]) for t in range(self.tables) if self.stopped[t]]

    def admit(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[Stop]]:
        """The pieces of ``rows`` that may be written now, and the new stops."""
        n = len(rows)
        if n == 0:
            return [], []
        tid = rows["tid"]
        ddl_at = np.flatnonzero(rows["tp"] == DDL)
        ddls = ddl_at.tolist()
        versions = rows["schema_ver"][ddl_at].tolist()
        bounds = (np.flatnonzero(tid[1:] != tid[:-1]) + 1).tolist()
        starts = [0, *bounds]
        out: list[np.ndarray] = []
        stops: list[Stop] = []
        d = 0  # the first DDL of the run (index into ddls)
        for t, lo, hi in zip(tid[starts].tolist(), starts, [*bounds, n], strict=True):
            first = d
            while d < len(ddls) and ddls[d] < hi:
                d += 1
            self._run(t, rows, lo, hi, ddls[first:d], versions[first:d], out, stops)
        return out, stops

    def _run(
        self,
        t: int,
        rows: np.ndarray,
        lo: int,
        hi: int,
        ddls: list[int],
        versions: list[int],
        out: list[np.ndarray],
        stops: list[Stop],
    ) -> None:
        """Rows ``lo:hi`` of ``rows``, all of table t, with DDLs at ``ddls`` (absolute)."""
        if self.stopped[t]:
            self._hold(t, rows[lo:hi], [i - lo for i in ddls], versions)
            return
        pos = lo
        for k, (i, v) in enumerate(zip(ddls, versions, strict=True)):
            if i > pos:
                out.append(rows[pos:i])
            pos = i + 1  # a DDL row is never written here
            if v > self.written[t]:
                self.stopped[t] = True
                self.stopped_at[t] = v
                stops.append(Stop(t, v, rows[i : i + 1]))
                if pos < hi:
                    rest = [j - pos for j in ddls[k + 1 :]]
                    self._hold(t, rows[pos:hi], rest, versions[k + 1 :])
                return
        if pos < hi:
            out.append(rows[pos:hi])

    def _hold(self, t: int, rows: np.ndarray, ddls: list[int], versions: list[int]) -> None:
        self.held_rows += len(rows)
        self.held[t].append(_Held(rows, ddls, versions))

    def release(self, t: int, v: int) -> tuple[list[np.ndarray], list[Stop]]:
        """DDL (t, v) and every earlier one of t are written: what may be written now."""
        if v > self.written[t]:
            self.written[t] = v
        if not self.stopped[t] or self.stopped_at[t] > self.written[t]:
            return [], []  # a late or repeated release: nothing waits for it
        self.stopped[t] = False
        queue = self.held[t]
        pending = list(queue)
        queue.clear()
        out: list[np.ndarray] = []
        stops: list[Stop] = []
        for k, held in enumerate(pending):
            if self.stopped[t]:  # stopped again: the rest stays held as it is, in order
                queue.extend(pending[k:])
                break
            self.held_rows -= len(held.rows)
            self._run(t, held.rows, 0, len(held.rows), held.ddls, held.versions, out, stops)
        return out, stops
