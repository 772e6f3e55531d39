"""``sink-<s>``: writes stream ``s`` to ``<sink-dir>/<flow-id>/sink_<s>.bin``, behind the DDL gate.

Each batch becomes ``SINK_DTYPE`` rows (the record's bytes plus ``sink_ts``, the
write time in ns, strictly increasing per file) written with one ``pwrite``.

The DDL barrier lives here, at the very end of the chain. Batches go through
the sink's ``TableGate`` (``zdf.runtime.bench.gate``): the data of an open table
is written at once; at a DDL (t, v) the table stops, and its later rows are
held in the sink until the DDL is written. The sinks settle each barrier among
themselves (``zdf.runtime.bench.barrier``): "arrived" to the DDL's writer sink,
which writes the DDL when every stream has arrived and answers "written" to
all, whose gates then write the held rows at once. Held rows are bounded: above
``max-held`` rows the sink takes no more input (its batches wait unacknowledged,
which stops the chain above it through the pipe credits). This cannot deadlock
because DDL (t, v) sits in the same binlog round in every stream: the stream
that is furthest behind has already been passed by all others at its stops,
so its barriers complete and it moves on.

Exactly once across failures (see ``zdf.runtime.bench.sinkfile``):

* the file is the state: a (re)started sink locks it, folds what is in it past
  its checkpoint into per-table positions, and subscribes to its syncer from
  ``resume_gtid``; rows at or below a table's position are replays and dropped
  (and so are rows the gate already holds, on a resubscription).
  A table's position moves on written rows only (data, and DDLs this sink
  wrote), never on a DDL that merely arrived: so the replay always starts at or
  before a DDL whose barrier may still be open, and every DDL before the replay
  point is written;
* every ``checkpoint-interval`` it commits ``length`` together with those
  positions (one small write per second, never per batch);
* a sink starts writing only once its first checkpoint is durable, so a sink
  with no checkpoint knows the file holds nothing of this job and truncates it;
* DDLs: the gate starts with the DDLs of its own file as written and learns the
  rest from the other sinks (their hello, "written", their done flags); a
  replayed DDL not yet known written stops its table again and its writer,
  who knows, answers "written" at once.

At the end of its input (and once it wrote every DDL it is the writer of) the
sink takes its figures (kept as it writes; read back from the file after a
restart), writes ``summary_<s>.json``, commits
``done`` and raises its done flag. It finishes only when every sink has raised
its flag, so that it is still there to answer a peer that needs a barrier
message from it; the coordinator merges the summaries.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sinkcore import SinkCore
from zdf.runtime.pipe import InPort


class Sink(SinkCore):
    """params: bench params, ``stream``, ``checkpoint-interval`` (seconds), ``max-held`` (rows).

    Its input is a pipe from its syncer, subscribed once the file is taken, from the
    lowest gtid some table still needs (``SinkState.resume_gtid``); the file, the gate,
    the barrier and the end are ``SinkCore``'s."""

    inp: InPort

    def open(self) -> None:
        self._inbox: deque[np.ndarray] = deque()  # batches not yet through the gate
        p = BenchParams.from_params(self.params)
        if self._init_sink(p, int(self.params["stream"]), self.params):
            self._open_file()

    def _open_input(self) -> None:
        self.inp = self.in_port(
            f"syncer-{self.stream}",
            "out",
            0,
            on_batch=self._on_batch,
            on_eos=self._on_eos,
            window=self.bench.window,
            resume=lambda: self.state.resume_gtid,
        )

    def _resume_input(self) -> None:
        self._pump()

    def _holding_input(self) -> bool:
        return bool(self._inbox)

    def _input_consumed(self) -> None:
        self.inp.ack_eos()

    def _on_batch(self, rows: np.ndarray, pos: int, next_pos: int) -> None:
        self._check_tables(rows)
        self._inbox.append(rows)
        self._pump()

    def _pump(self) -> None:
        """Take batches through the gate while it holds less than ``max-held`` rows."""
        taken = False
        while self._inbox and self.gate.held_rows < self.max_held:
            self._admit(self._inbox.popleft())
            self.consumed()
            taken = True
        if taken:
            self.progress(records=float(self.state.records))
        self._maybe_finish()

    def consumed(self) -> None:
        """A batch went through the gate: give the syncer its credit back (tests slow this)."""
        self.inp.ack()

    def _on_eos(self, pos: int) -> None:
        self._input_ended = True
        self._maybe_finish()
