"""``binlog-<s>``: merges every producer's batches for stream ``s`` into one log.

The merge is deterministic so that the stream (its gtid order) is reproducible:
round ``r`` is batch ``r`` of producer 0, then of producer 1, ... (a producer
that has ended is skipped), and a round is appended only when all of its
batches are here. Each round becomes one chunk of the log with gtids assigned
by ``np.arange``. Because every producer's DDL (t, v) lies in the same batch
index for every stream, DDLs appear in the same relative order in all streams,
which is what keeps the syncers' bounded buffers from deadlocking.

The log is served on port ``stream`` (one channel) from any gtid the receiver
asks for: positions are gtids. Merging pauses while more than ``max-backlog``
rows are unsent, and producer batches are acknowledged only once merged, so a
slow consumer stops the producers. The log itself is kept (it is the replay
source, as a MySQL binlog is); a binlog restarted elsewhere rebuilds it by
replaying the producers from batch 0 (they are deterministic), so it needs no
checkpoint: the same rounds give the same gtids, and a receive that asks for a
gtid beyond what is rebuilt yet is served once the log gets there.

In the benchmark job it finishes when its receive is done (param ``done-after``), since until then a
restarted receive, syncer or sink may replay from any gtid.
"""

from __future__ import annotations

import bisect
from collections import deque
from functools import partial
from typing import Any

import numpy as np

from zdf.runtime.batches import concat_rows
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import InPort, OutPort


class Binlog(Operator):
    """params: the bench params plus ``stream``; optional ``max-backlog`` (rows)."""

    out: OutPort

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        self.max_backlog = int(self.params.get("max-backlog", 4 * p.batch_size * p.tables))
        self.max_rows = int(self.params.get("max-message-rows", 4 * p.batch_size * p.tables))
        self.round = 0
        self.chunks: list[np.ndarray] = []
        self.starts: list[int] = []
        self.end = 0  # next gtid
        self.complete = False
        self.send_pos = 0
        self.queues: list[deque[np.ndarray]] = [deque() for _ in range(p.tables)]
        self.ended: list[int | None] = [None] * p.tables
        self.out = self.out_port(
            "stream",
            1,
            on_credit=lambda ch: self._step(),
            on_subscribe=self._on_subscribe,
            on_eos_acked=self._on_eos_acked,
        )
        self.inputs: list[InPort] = [
            self.in_port(
                f"producer-{t}",
                "out",
                self.stream,
                on_batch=partial(self._on_batch, t),
                on_eos=partial(self._on_eos, t),
                window=p.window,
            )
            for t in range(p.tables)
        ]
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)

    def snapshot(self) -> dict[str, Any]:
        return {"rounds": self.round, "end": self.end}

    # -- merging ---------------------------------------------------------------
    def _on_batch(self, t: int, rows: np.ndarray, pos: int, next_pos: int) -> None:
        self.queues[t].append(rows)
        self._step()

    def _on_eos(self, t: int, pos: int) -> None:
        self.ended[t] = pos
        self._step()

    def _merge_round(self) -> bool:
        """Append round ``self.round`` if all of it is here; False when it must wait."""
        live = [t for t in range(len(self.queues)) if not self._ended_by(t, self.round)]
        if not live:
            self.complete = True
            for port in self.inputs:
                port.ack_eos()
            return False
        if any(not self.queues[t] for t in live):
            return False
        pieces = [self.queues[t].popleft() for t in live]
        chunk = concat_rows(pieces)  # a copy: the log must own its rows
        if len(chunk):
            chunk["gtid"] = np.arange(self.end, self.end + len(chunk), dtype=np.int64)
            self.chunks.append(chunk)
            self.starts.append(self.end)
            self.end += len(chunk)
        for t in live:
            self.inputs[t].ack()
        self.round += 1
        return True

    def _ended_by(self, t: int, round_: int) -> bool:
        end = self.ended[t]
        return end is not None and end <= round_ and not self.queues[t]

    # -- serving ---------------------------------------------------------------
    def _step(self) -> None:
        progress = True
        while progress:
            progress = False
            while (
                not self.complete
                and self.end - self.send_pos < self.max_backlog
                and self._merge_round()
            ):
                progress = True
            while self.out.credit(0) > 0 and self.send_pos < self.end:
                self._send_from(self.send_pos)
                progress = True
        if (
            self.complete
            and self.send_pos >= self.end
            and self.out.subscribed(0)
            and not self.out.eos_sent(0)
        ):
            self.out.send_eos(0, self.end)
        self.progress(gtid=float(self.end), sent=float(self.send_pos))

    def _send_from(self, pos: int) -> None:
        i = bisect.bisect_right(self.starts, pos) - 1
        start = self.starts[i]
        rows = self.chunks[i][pos - start : pos - start + self.max_rows]
        self.out.send(0, rows, pos, pos + len(rows))
        self.send_pos = pos + len(rows)

    def _on_subscribe(self, ch: int, start: int) -> None:
        if start > self.end and self.complete:
            raise ValueError(f"receiver asked for gtid {start}; the stream ends at {self.end}")
        self.send_pos = start

    def _on_eos_acked(self, ch: int) -> None:
        if self.done_after() is None:
            self._downstream_done()

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish({"records": self.end, "rounds": self.round})
