"""``receive-<s>``: reads stream ``s`` from its binlog and hands it to the syncer.

A pass-through ``StreamOperator`` whose input and output positions are both
gtids: the batches it forwards are the very frames it received (zero copy), and
a receive restarted from a checkpoint subscribes to the binlog from the gtid in
it, so the downstream sees the stream continue where it left off.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zdf.runtime.stream import StreamOperator


class Receive(StreamOperator):
    """params: ``input`` (the binlog's ``stream`` port), ``batch-size``, ``window``."""

    _start = 0

    def restore(self, state: dict[str, Any]) -> None:
        self._start = int(state.get("gtid", 0))

    def snapshot(self) -> dict[str, Any]:
        # The next gtid the syncer has not yet acknowledged would be exact; the
        # failover issue will checkpoint it through the downstream's acks.
        return {"gtid": self.inp.pos}

    def input_start(self) -> int:
        return self._start

    def output_start(self) -> int:
        return self._start

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        return rows

    def on_end_of_stream(self) -> None:
        self.progress(records=float(self.rows_in))
        self.end_output()
