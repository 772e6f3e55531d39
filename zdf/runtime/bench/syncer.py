"""``syncer-<s>``: hands stream ``s`` to its sink, checked, in stream order.

The DDL barrier's gate is not here but at the very end of the chain, in the
sink (``zdf.runtime.bench.gate`` and ``zdf.runtime.bench.barrier``): a gate in
front of a pipe puts everything queued in that pipe (up to its window of
batches) into every barrier round, and a table's barriers are sequential, so
that queue would be paid once per DDL. The syncer keeps the stream in gtid
order (which lets the sink drop a replay by one position) and checks every
batch's table ids, failing the task on a record of a table the job does not
have rather than passing it on.

Failover: the syncer keeps no state that must survive (``replays``). When its
sink subscribes from a gtid (a restarted sink, or a restarted syncer's first
subscriber) it drops everything it has and replays the stream from that gtid
through the receive.

In the benchmark job it finishes when its sink is done (param ``done-after``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zdf.runtime.bench.params import BenchParams
from zdf.runtime.stream import StreamOperator


class Syncer(StreamOperator):
    """params: bench params, ``stream``, ``input`` (the receive's ``out``)."""

    replays = True

    def open(self) -> None:
        self.bench = BenchParams.from_params(self.params)
        self.stream = int(self.params["stream"])
        super().open()
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)

    def _on_eos_acked(self, ch: int) -> None:
        if self.done_after() is None:
            super()._on_eos_acked(ch)
        else:
            self.inp.ack_eos()  # finishing waits for the sink's done flag

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish(self.summary())

    def summary(self) -> dict[str, Any]:
        return {"records": self.rows_in}

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        if len(rows) == 0:
            return None
        tid = rows["tid"]
        if tid.min() < 0 or tid.max() >= self.bench.tables:
            raise ValueError(f"stream {self.stream}: table id out of range in a batch")
        return rows
