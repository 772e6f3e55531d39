"""``sink-<s>`` on the public dataflow API: stream ``s`` into ``sink_<s>.bin``, behind
the DDL barrier.

The same sink as ``zdf.runtime.bench.sink`` (read its docstring for the barrier, the
gate and exactly-once; the file, the gate and the barrier are the same classes), as
a ``Transform`` without output. What changes is how it meets its input:

* a step is a binlog round; the rows of a step go through the gate as a batch did;
* it holds rows back while a barrier is open, and takes no step (``can_step``)
  while the gate holds ``max-held`` rows or more, nor before its file is locked
  and folded: its input's batches then wait unacknowledged, which stops the chain
  above it through the pipes' credit;
* a restarted sink resumes at the round that holds its resume gtid (the lowest
  gtid some table still needs, from its checkpoint: ``BenchParams.round_starts``
  maps it to its round), and drops the replayed rows each table already has, as
  the first sink did; its upstream chain is stateless and rolls back to that round;
* the end of the input is ``completed()``: the sink finishes once the gate is empty
  and it wrote every DDL it is the writer of, then waits for every sink's done
  flag as before.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from zdf.dataflow.operator import Transform
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkcore import SinkCore
from zdf.runtime.bench.sinkfile import SinkState
from zdf.runtime.bench.stages import record_input


class Sink(Transform, SinkCore):
    """params: the bench params, ``checkpoint-interval`` (seconds), ``max-held`` (rows);
    instance ``s`` is stream ``s``. The file, the gate, the barrier and the end are
    ``SinkCore``'s."""

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        record_input(inputs)
        return None

    def open(self) -> None:
        flow = self.params["flow"]
        p = BenchParams.from_params(flow["params"])
        self._started = False
        if not self._init_sink(p, int(flow["instance"]), flow["params"]):
            return
        if self._checkpoint is not None:  # for ``start_step``; the file is folded later
            self.state = SinkState.from_wire(p.tables, self._checkpoint)
        super().open()
        self._open_file()

    def start_step(self) -> int:
        """The round holding the lowest gtid a table still needs (0 without a checkpoint)."""
        if self._checkpoint is None:
            return 0
        starts = self.bench.round_starts(self.stream).tolist()
        return max(0, bisect.bisect_right(starts, self.state.resume_gtid) - 1)

    def _open_input(self) -> None:
        self._started = True
        self.pump()

    def _resume_input(self) -> None:
        self.pump()
        self._maybe_finish()

    # -- steps ---------------------------------------------------------------------------
    def can_step(self) -> bool:
        return self._started and self.gate.held_rows < self.max_held

    def process(self, rows: np.ndarray, port: int) -> np.ndarray | None:
        self._check_tables(rows)
        self._admit(rows)
        return None

    def step_progress(self) -> dict[str, float]:
        return {"records": float(self.state.records)}

    def completed(self) -> None:
        self._input_ended = True
        self._maybe_finish()
