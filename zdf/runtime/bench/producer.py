"""``producer-<t>``: the records of one table, split over the streams.

Batch ``k`` holds data pk ``k*B+1 .. (k+1)*B`` (B = batch-size); channel ``s`` of
the port ``out`` gets the pks that ``BenchParams.streams_of`` assigns to stream
``s`` plus *every* DDL of that range, each DDL just before the data pk it
precedes. A batch is a pure function of (table, k, stream), so a restarted
producer, or a binlog that resubscribes from batch ``k``, gets exactly the same
records again: the producer's only position is the next batch per channel, and
the subscriber names it. Batches are built with numpy ranges, never record by
record.

With a ``rate``, batch ``k`` is due ``k * batch-size / rate`` seconds after the
pace's start ``t0`` (wall clock); ``t0`` is its checkpoint, saved once, so a
restarted producer catches up instead of pacing from zero again. The binlogs
merge the producers' batches round by round, so a producer paced ahead of the
others would only have its records wait in the binlogs: producers with the
param ``pace-with`` take ``t0`` from that producer (published as the endpoint
``pace``), which starts its pace ``pace-grace`` seconds after it opens, so that
all of them run on one schedule.

In the benchmark job a producer finishes when every binlog is done (param
``done-after``: their done flags), not when they acknowledge its end of
stream: a binlog restarted after that merges again from one of its marks (see
``binlog``) and needs the producer again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from zdf.records import DATA, DDL, RECORD_DTYPE
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import OutPort


def _batch_pks(
    p: BenchParams, table: int, k: int, stream: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The pks of batch ``k`` of ``table`` for ``stream`` in order (see ``producer_batch``)
    and where its DDLs sit: a DDL goes just before the data pk it precedes."""
    lo = k * p.batch_size + 1
    hi = min((k + 1) * p.batch_size, p.rcd_cnt)
    if stream is None:
        data = np.arange(lo, hi + 1, dtype=np.int64)
    else:
        first = lo + (stream - table - lo) % p.streams  # the first pk >= lo of this stream
        data = np.arange(first, hi + 1, p.streams, dtype=np.int64)
    f = p.ddl_freq
    ddl = np.arange(-(-lo // f) * f, hi + 1, f, dtype=np.int64)
    at = np.searchsorted(data, ddl, side="left")
    return np.insert(data, at, ddl), at + np.arange(len(ddl))


def _records(p: BenchParams, table: int, pk: np.ndarray, ddl_at: np.ndarray, ts: int) -> np.ndarray:
    rows = np.zeros(len(pk), RECORD_DTYPE)  # gtid 0: the binlog assigns positions
    if DATA:
        rows["tp"] = DATA
    if len(ddl_at):
        rows["tp"][ddl_at] = DDL
    rows["pk"] = pk
    rows["schema_ver"] = pk // p.ddl_freq
    rows["tid"] = table
    rows["ts"] = ts
    return rows


def producer_batch(p: BenchParams, table: int, k: int, stream: int | None, ts: int) -> np.ndarray:
    """Batch ``k`` of ``table`` for ``stream`` (see the module docstring); ``None``: the
    whole batch, every stream's data rows with the DDLs once."""
    pk, ddl_at = _batch_pks(p, table, k, stream)
    return _records(p, table, pk, ddl_at, ts)


def producer_batch_by_stream(p: BenchParams, table: int, k: int, ts: int) -> np.ndarray:
    """The batches ``producer_batch(table, k, s)`` of every stream ``s`` in turn, built
    as one array (so each stream's is a slice of it, ``BenchParams.batch_rows`` long):
    the DDLs are in it once per stream."""
    pieces = [_batch_pks(p, table, k, s) for s in range(p.streams)]
    offsets = np.cumsum([0] + [len(pk) for pk, _ in pieces[:-1]])
    pk = np.concatenate([pk for pk, _ in pieces])
    ddl_at = np.concatenate([at + offsets[s] for s, (_, at) in enumerate(pieces)])
    return _records(p, table, pk, ddl_at, ts)


PACE = "pace"
"""The endpoint name under which a paced producer publishes its ``t0``."""

PACE_GRACE = 0.05
"""Seconds between a pace leader's open and its ``t0``: time for the others to learn it."""


class Producer(Operator):
    """params: the bench params plus ``table``; publishes ``out`` with one channel per stream."""

    out: OutPort

    _t0: float | None = None

    def restore(self, state: dict[str, Any]) -> None:
        t0 = state.get("t0")
        self._t0 = float(t0) if isinstance(t0, int | float) else None

    def snapshot(self) -> dict[str, Any]:
        return {"t0": self.t0, "next": list(self.next)}

    t0: float | None

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.table = int(self.params["table"])
        self.batches = p.producer_batches
        self.next = [0] * p.streams
        self._paced = [False] * p.streams
        self.out = self.out_port(
            "out",
            p.streams,
            on_credit=self._send,
            on_subscribe=self._on_subscribe,
            on_eos_acked=self._on_eos_acked,
        )
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)
        self.t0 = self._t0
        pace_with = self.params.get("pace-with")
        if self.t0 is not None:
            pass  # a restart: the schedule it had
        elif p.rate <= 0:
            self.t0 = time.time()
        elif isinstance(pace_with, str) and pace_with:
            self.ctx.resolve_endpoint(pace_with, PACE, self.guard(self._paced_from))
        else:
            self._start_pace(time.time() + float(self.params.get("pace-grace", PACE_GRACE)))
        if self.t0 is not None and p.rate > 0:
            self.ctx.publish_endpoint(PACE, repr(self.t0))

    def _paced_from(self, t0: str) -> None:
        if self.t0 is None:
            self._start_pace(float(t0))

    def _start_pace(self, t0: float) -> None:
        """Batch k of every channel is due at ``t0 + k * batch-size / rate`` (saved once)."""
        self.t0 = t0
        self.checkpoint()
        for ch in range(self.bench.streams):
            self._send(ch)

    def _send(self, ch: int) -> None:
        p, out = self.bench, self.out
        if self.t0 is None:
            return  # paced, and the schedule to share is not known yet
        while out.credit(ch) > 0 and self.next[ch] < self.batches:
            k = self.next[ch]
            if p.rate > 0:
                delay = self.t0 + k * p.batch_size / p.rate - time.time()
                if delay > 0:
                    if not self._paced[ch]:
                        self._paced[ch] = True
                        self.call_later(delay, lambda: self._resume(ch))
                    return
            out.send(ch, producer_batch(p, self.table, k, ch, time.time_ns()), k, k + 1)
            self.next[ch] = k + 1
        if self.next[ch] >= self.batches and out.subscribed(ch) and not out.eos_sent(ch):
            out.send_eos(ch, self.batches)
        self.progress(batches=float(sum(self.next)))

    def _resume(self, ch: int) -> None:
        self._paced[ch] = False
        self._send(ch)

    def _on_subscribe(self, ch: int, start: int) -> None:
        if not 0 <= start <= self.batches:
            raise ValueError(f"stream {ch} asked for batch {start}; there are {self.batches}")
        self.next[ch] = start

    def _on_eos_acked(self, ch: int) -> None:
        streams = range(self.bench.streams)
        if self.done_after() is None and all(self.out.eos_acked(s) for s in streams):
            self._downstream_done()

    def _downstream_done(self) -> None:
        p = self.bench
        self.mark_done()
        self.finish({"records": p.rcd_cnt, "ddls": p.versions, "batches": self.batches})
