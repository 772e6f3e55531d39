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
source, as a MySQL binlog is).

Checkpoints: every ``checkpoint-interval`` the binlog saves a *mark*, the
round it is at and the gtid that round starts at. A mark is a consistent cut
of the whole stage: batch ``r`` of every producer (so the producers' positions,
``r * batch-size`` per table) and gtid ``g`` of this stream. A binlog restarted
elsewhere does not subscribe to its producers at once: it waits for its
receive to ask for a gtid, picks the latest mark at or before it, and merges
again from that round, starting gtids at the mark's (the merge is
deterministic: the same rounds give the same gtids). So a restart replays
about one checkpoint interval of input, not the whole job. Without a mark at
or before the gtid asked for (none saved yet, or one older than the last
``MAX_MARKS``) it merges from round 0, and a later subscription from below
what it holds makes it merge again from an earlier mark: always correct, only
slower.

In the benchmark job it finishes when its receive is done (param ``done-after``), since until then a
restarted receive, syncer or sink may replay from any gtid.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from zdf.runtime.batches import concat_rows
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import InPort, OutPort

MAX_MARKS = 64
"""Marks kept in a checkpoint: the newest ones (a receive resumes from its sink's last
commit, a checkpoint interval or so behind the binlog)."""

Mark = tuple[int, int]
"""(round, the gtid that round starts at)"""


class Binlog(Operator):
    """params: the bench params plus ``stream`` and ``checkpoint-interval`` (seconds);
    optional ``max-backlog`` (rows)."""

    out: OutPort

    _restored: list[Mark] = []

    def restore(self, state: dict[str, Any]) -> None:
        self._restored = marks_of(state.get("marks"))

    def snapshot(self) -> dict[str, Any]:
        return {"rounds": self.round, "end": self.end, "marks": [list(m) for m in self.marks]}

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        self.max_backlog = int(self.params.get("max-backlog", 4 * p.batch_size * p.tables))
        self.max_rows = int(self.params.get("max-message-rows", 4 * p.batch_size * p.tables))
        self.round = 0
        self.chunks: list[np.ndarray] = []
        self.starts: list[int] = []
        self.end = 0  # next gtid
        self.base = 0  # the first gtid held (the mark merging started from)
        self.marks: list[Mark] = list(self._restored)
        self.merging = not self.marks  # a restart waits for its receive to say where
        self.rebuilt_from: list[int] = []  # rounds this attempt merged from (0: the start)
        self._saving = False
        self.complete = False
        self.send_pos = 0
        self.queues: list[deque[np.ndarray]] = [deque() for _ in range(p.tables)]
        self.ended: list[int | None] = [None] * p.tables
        self._reset_merge()
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
                active=self.merging,
            )
            for t in range(p.tables)
        ]
        if self.merging:
            self.rebuilt_from.append(0)
        self.call_every(float(self.params.get("checkpoint-interval", 1.0)), self._save_mark)
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)

    # -- checkpoints -----------------------------------------------------------
    def _save_mark(self) -> None:
        mark = (self.round, self.end)
        if self._saving or self.round == 0 or (self.marks and self.marks[-1] == mark):
            return
        self.marks = [*self.marks, mark][-MAX_MARKS:]
        self._saving = True
        self.checkpoint(self._saved)

    def _saved(self) -> None:
        self._saving = False

    def _merge_from(self, gtid: int) -> None:
        """Merge again from the latest mark at or before ``gtid`` (round 0 if none)."""
        at = bisect.bisect_right([g for _, g in self.marks], gtid) - 1
        round_, start = self.marks[at] if at >= 0 else (0, 0)
        self.round, self.end, self.base = round_, start, start
        self.chunks.clear()
        self.starts.clear()
        self.complete = False
        self.ended = [None] * len(self.queues)
        for queue in self.queues:
            queue.clear()
        self._reset_merge()
        for port in self.inputs:
            port.restart(round_)
        self.merging = True
        self.rebuilt_from.append(round_)

    # -- merging ---------------------------------------------------------------
    # The merge costs what arrives, not the number of tables: ``live`` is the tables
    # not ended as of some round at or before ``self.round`` (a superset of the live
    # tables of this round), ``waiting`` those of them this round still waits for (no
    # batch queued and not ended by this round). A round is ready when ``waiting`` is
    # empty; a batch or an end takes its table out of it; a merged round puts back the
    # tables it emptied.
    def _reset_merge(self) -> None:
        self.live: list[int] = list(range(len(self.queues)))
        self.waiting: set[int] = set(self.live)

    def _on_batch(self, t: int, rows: np.ndarray, pos: int, next_pos: int) -> None:
        self.queues[t].append(rows)
        self.waiting.discard(t)
        self._step()

    def _on_eos(self, t: int, pos: int) -> None:
        self.ended[t] = pos
        if self._ended_by(t, self.round):
            self.waiting.discard(t)
        self._step()

    def _merge_round(self) -> bool:
        """Append round ``self.round`` if all of it is here; False when it must wait."""
        if self.waiting:
            return False
        live = self.live = [t for t in self.live if not self._ended_by(t, self.round)]
        if not live:
            self.complete = True
            for port in self.inputs:
                port.ack_eos()
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
        self.waiting = {t for t in live if not self.queues[t] and not self._ended_by(t, self.round)}
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
        if not self.merging or start < self.base:
            self._merge_from(start)
        self.send_pos = start

    def _on_eos_acked(self, ch: int) -> None:
        if self.done_after() is None:
            self._downstream_done()

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish({"records": self.end, "rounds": self.round, "merged_from": self.rebuilt_from})


def marks_of(raw: object) -> list[Mark]:
    """The marks of a checkpoint, checked: ascending (round, gtid) pairs; else none."""
    if not isinstance(raw, Sequence):
        return []
    marks: list[Mark] = []
    for item in raw:
        if not (isinstance(item, Sequence) and len(item) == 2):
            return []
        round_, gtid = item
        if not (type(round_) is int and type(gtid) is int and round_ > 0 and gtid >= 0):
            return []
        if marks and (round_ <= marks[-1][0] or gtid < marks[-1][1]):
            return []
        marks.append((round_, gtid))
    return marks
