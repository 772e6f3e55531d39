"""``receive-<s>``: reads stream ``s`` from its binlog and hands it to the syncer.

A pass-through ``StreamOperator`` whose input and output positions are both
gtids: the batches it forwards are the very frames it received (zero copy).

It keeps no position of its own (``replays``): whenever the syncer subscribes
from a gtid, the receive subscribes to the binlog from that gtid. The position
that survives failures is the sink's committed one, pushed up the chain by the
subscriptions, so a restarted receive needs no checkpoint and a live one follows
a restarted syncer or sink back to where they resume.

In the benchmark job it finishes when its syncer is done (param ``done-after``,
``Operator.when_done``), not when its output's end of stream is acknowledged: a
syncer restarted after that acknowledgement could need the stream again.
"""

from __future__ import annotations

import numpy as np

from zdf.runtime.stream import StreamOperator


class Receive(StreamOperator):
    """params: ``input`` (the binlog's ``stream`` port), ``stream``, ``batch-size``, ``window``."""

    replays = True

    def open(self) -> None:
        super().open()
        after = self.done_after()
        if after is not None:
            self.when_done(after, self._downstream_done)

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        return rows

    def on_end_of_stream(self) -> None:
        self.progress(records=float(self.rows_in))
        self.end_output()

    def _on_eos_acked(self, ch: int) -> None:
        if self.done_after() is None:
            super()._on_eos_acked(ch)
        else:
            self.inp.ack_eos()  # the end is consumed; finishing waits for the done flag

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish(self.summary())
