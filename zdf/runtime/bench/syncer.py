"""``syncer-<s>``: holds each table behind its DDL until the barrier releases it.

Theory of operation (the DDL barrier, syncer side)
--------------------------------------------------
Per table the syncer is either *open* or *blocked at version v*. Processing a
batch (vectorised; a Python loop only over tables, never records):

* rows of a blocked table are held, in order;
* for an open table, rows up to and including its first DDL (t, v) are
  forwarded and the table becomes blocked at v: the rows after it are held.

So the sink sees, per table, all data of versions < v, then the DDL (t, v), then
nothing more of that table. The sink reports the DDL's *arrival* to the
coordinator only after writing everything before it; once every stream's sink
has, the coordinator has one sink write the DDL and then sends ``release (t, v)``
to every syncer, which forwards the held rows of t up to and including the next
DDL of t (and blocks again there). Hence no data of version >= v is written
anywhere before the DDL, and all data of version < v is written before it.

Failover: the syncer keeps no state that must survive (``replays``). When its
sink subscribes from a gtid (a restarted sink, or a restarted syncer's first
subscriber) it drops everything it holds, opens every table and replays the
stream from that gtid through the receive. A table then blocks again at its
first DDL, which may be one whose barrier completed long ago; the sink reports
its arrival again and the coordinator, which knows it is written, releases it
at once. Releases are facts ("DDL (t, v) is written"), so one that arrives late
or twice is harmless: a release for a DDL the syncer does not wait at is ignored.

Other tables keep flowing while one waits (order is only per table). Held rows
are bounded: above ``max-held`` rows the syncer stops taking input (and so,
through the pipe credits, stops its upstream). This cannot deadlock because
DDL (t, v) sits in the same binlog round in every stream: the stream that is
furthest behind has already been passed by all others at its blocking DDL,
so its barrier completes and it moves on.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from zdf.records import DDL
from zdf.runtime.batches import split_by
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.link import PeerLink
from zdf.runtime.stream import StreamOperator
from zdf.wire.rpc import Call


class Syncer(StreamOperator):
    """params: bench params, ``stream``, ``input`` (the receive's ``out``), ``max-held``."""

    replays = True

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        self.max_held = int(self.params.get("max-held", 16 * p.batch_size))
        self.releases = 0
        self.reset()
        super().open()
        self.coord = self.link(
            "coordinator", "coord", {"release": self._on_release}, on_connect=self._hello
        )
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)

    def reset(self) -> None:
        p = self.bench
        self.blocked = np.zeros(p.tables, dtype=bool)
        self.blocked_at = [0] * p.tables  # the version a blocked table waits for
        self.held: list[deque[np.ndarray]] = [deque() for _ in range(p.tables)]
        self.held_rows = 0
        self._input_done = False

    def _hello(self, link: PeerLink) -> None:
        link.notify("hello", {"role": "syncer", "stream": self.stream, "attempt": self.ctx.attempt})

    def _on_eos_acked(self, ch: int) -> None:
        if self.done_after() is None:
            super()._on_eos_acked(ch)
        else:
            self.inp.ack_eos()  # finishing waits for the sink's done flag

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish(self.summary())

    def summary(self) -> dict[str, Any]:
        return {"records": self.rows_in, "releases": self.releases}

    # -- the data path -----------------------------------------------------------
    def can_accept(self) -> bool:
        return self.held_rows < self.max_held and super().can_accept()

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        n = len(rows)
        if n == 0:
            return None
        tid = rows["tid"]
        if tid.min() < 0 or tid.max() >= len(self.held):
            raise ValueError(f"stream {self.stream}: table id out of range in a batch")
        ddl_at = np.flatnonzero(rows["tp"] == DDL)
        if ddl_at.size == 0 and not self.blocked.any():
            return rows
        # cut[t]: rows of table t after this index are held (-1: all, n: none).
        cut = np.where(self.blocked, -1, n)
        if ddl_at.size:
            tables, first = np.unique(tid[ddl_at], return_index=True)
            open_ = ~self.blocked[tables]
            tables, at = tables[open_], ddl_at[first[open_]]
            cut[tables] = at
            versions = rows["schema_ver"][at]
            for t, v in zip(tables.tolist(), versions.tolist(), strict=True):
                self.blocked[t] = True
                self.blocked_at[t] = v
        hold = np.arange(n) > cut[tid]
        if not hold.any():
            return rows
        self._hold(rows[hold])
        forwarded: np.ndarray = rows[~hold]
        return forwarded

    def _hold(self, rows: np.ndarray) -> None:
        self.held_rows += len(rows)
        for t, piece in split_by(rows, rows["tid"]):
            self.held[t].append(piece)

    # -- the barrier ---------------------------------------------------------------
    def _on_release(self, call: Call) -> None:
        pairs = call.body.get("pairs") if isinstance(call.body, dict) else None
        if not isinstance(pairs, list):
            raise ValueError("release without pairs")
        for t, v in pairs:
            if not (0 <= t < len(self.held) and self.blocked[t] and self.blocked_at[t] == v):
                self.log.debug("ignoring a release of (%s, %s) this stream does not wait for", t, v)
                continue
            self.blocked[t] = False
            self.releases += 1
            self._drain(t)
        self.pump()
        self._maybe_end()

    def _drain(self, t: int) -> None:
        """Forward held rows of table t up to and including its next DDL."""
        queue = self.held[t]
        while queue and not self.blocked[t]:
            piece = queue.popleft()
            self.held_rows -= len(piece)
            ddl = np.flatnonzero(piece["tp"] == DDL)
            if ddl.size == 0:
                self.emit(piece)
                continue
            i = int(ddl[0])
            self.emit(piece[: i + 1])
            self.blocked[t] = True
            self.blocked_at[t] = int(piece["schema_ver"][i])
            if i + 1 < len(piece):
                queue.appendleft(piece[i + 1 :])
                self.held_rows += len(piece) - i - 1

    def on_end_of_stream(self) -> None:
        self._input_done = True
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._input_done and self.held_rows == 0:
            self.end_output()
