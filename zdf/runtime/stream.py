"""``StreamOperator``: the one-input, one-output operator most tasks are.

Subclasses override ``process(rows) -> rows | None`` (vectorised over a whole
batch, never a loop per record) and, if they hold records back,
``can_accept()``, ``emit()`` and ``on_end_of_stream()``.

Flow control, end to end: input batches wait in an inbox (at most the input
window, since they are acknowledged only once processed); they are processed
only while ``can_accept()`` holds, which by default means "less than two output
messages are pending". Output waits for credit from the downstream task. So a
slow consumer stops this task, which stops its producer: memory is bounded by
windows and batch sizes, never by the length of the stream.

Output is coalesced: everything emitted in one burst of callbacks is flushed
at its end (``Operator.defer``) as few messages of at most ``max_rows`` rows,
so a stage that emits many small pieces (a syncer releasing one table after a
DDL) does not multiply messages downstream.

Output positions count rows (from ``output_start()``), so a downstream task that
resubscribes from any position still unacknowledged gets exactly the rows after
it: sent batches are kept until acknowledged.

Replaying stages (``replays = True``): every (re)subscription of the output
drops what the stage holds and replays its input from the position the
downstream asks for. On its first run (attempt 0) such a stage subscribes its
input at open from ``input_start()`` without waiting for its downstream, so that
a chain of replaying stages starts at once rather than one subscription hop at a
time; the first downstream subscription from exactly that position keeps what
has come in so far. A restarted stage waits for its downstream's position. Such
a stage keeps no state of its own across a restart: its position is its
downstream's, and it needs no checkpoint (the benchmark's receive and syncer).

params: ``input`` = ``{"task": ..., "port": "out", "channel": 0, "from": 0}``, optional
``window`` (input credit) and ``batch-size`` (output coalescing unit / 1).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from zdf.runtime.batches import concat_rows
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import DEFAULT_WINDOW, InPort, OutPort

DEFAULT_BATCH_ROWS = 4096


class StreamOperator(Operator):
    """One input pipe, one output port ``out`` with one channel (see the module docstring)."""

    out: OutPort
    inp: InPort
    replays = False
    """Subscribe the input from the downstream's position on every output subscription."""

    def open(self) -> None:
        batch = int(self.params.get("batch-size", DEFAULT_BATCH_ROWS))
        self.max_rows = max(1, int(self.params.get("max-message-rows", 4 * batch)))
        self.max_pending_rows = 2 * self.max_rows
        self.rows_in = 0
        self._inbox: deque[np.ndarray] = deque()
        self._pending: deque[np.ndarray] = deque()
        self._pending_rows = 0
        self._unacked: deque[tuple[int, int, np.ndarray]] = deque()
        self._emitted = self.output_start()
        self._input_ended = False
        self._eos_handled = False
        self._output_ended = False
        self._flush_scheduled = False
        # A replaying stage's first run starts its input at once, from ``input_start()``,
        # rather than after its downstream's subscription has come up the whole chain.
        self._early_start = not self.replays or self.ctx.attempt == 0
        self.out = self.out_port(
            "out",
            1,
            on_credit=self._on_credit,
            on_subscribe=self._on_subscribe,
            on_eos_acked=self._on_eos_acked,
        )
        src = self.params["input"]
        self.inp = self.in_port(
            str(src["task"]),
            str(src.get("port", "out")),
            int(src.get("channel", 0)),
            on_batch=self._on_batch,
            on_eos=self._on_input_eos,
            start=self.input_start(),
            window=int(self.params.get("window", DEFAULT_WINDOW)),
            active=self._early_start,
        )

    # -- to override ---------------------------------------------------------
    def process(self, rows: np.ndarray) -> np.ndarray | None:
        """Transform one input batch; return what to emit now (or None)."""
        return rows

    def can_accept(self) -> bool:
        """Whether to process another input batch now (backpressure)."""
        return self._pending_rows < self.max_pending_rows

    def on_end_of_stream(self) -> None:
        """The input ended and every input batch was processed; by default end the output."""
        self.end_output()

    def input_start(self) -> int:
        """Where to subscribe from: ``input.from`` (default 0), or a restored position."""
        return int(self.params["input"].get("from", 0))

    def output_start(self) -> int:
        return 0

    def reset(self) -> None:
        """A replaying stage drops what it holds (override and call super())."""

    def summary(self) -> dict[str, Any]:
        return {"records": self.rows_in}

    # -- for subclasses ------------------------------------------------------
    def emit(self, rows: np.ndarray) -> None:
        """Queue rows for the output; flushed at the end of the current burst."""
        if len(rows) == 0:
            return
        self._pending.append(rows)
        self._pending_rows += len(rows)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.defer(self._flush)

    def end_output(self) -> None:
        """No more output: send end of stream once everything pending is sent."""
        self._output_ended = True
        self._flush()

    def pump(self) -> None:
        """Process queued input while ``can_accept()``; call when it may have become true."""
        while self._inbox and self.can_accept():
            rows = self._inbox.popleft()
            self.rows_in += len(rows)
            out = self.process(rows)
            self.inp.ack()
            if out is not None:
                self.emit(out)
        if not self._inbox and self._input_ended and not self._eos_handled:
            self._eos_handled = True
            self.on_end_of_stream()

    # -- plumbing -------------------------------------------------------------
    def _on_batch(self, rows: np.ndarray, pos: int, next_pos: int) -> None:
        self._inbox.append(rows)
        self.pump()

    def _on_input_eos(self, pos: int) -> None:
        self._input_ended = True
        self.pump()

    def _on_credit(self, ch: int) -> None:
        while len(self._unacked) > self.out.in_flight(0):
            self._unacked.popleft()
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self.out
        while self._pending and out.credit(0) > 0:
            rows = self._take()
            pos = self._emitted
            self._emitted += len(rows)
            out.send(0, rows, pos, self._emitted)
            self._unacked.append((pos, self._emitted, rows))
        if self._output_ended and not self._pending and out.subscribed(0) and not out.eos_sent(0):
            out.send_eos(0, self._emitted)
        if self._inbox:
            self.pump()

    def _take(self) -> np.ndarray:
        first = self._pending.popleft()
        if len(first) > self.max_rows:
            self._pending.appendleft(first[self.max_rows :])
            first = first[: self.max_rows]
        pieces, total = [first], len(first)
        while self._pending and total + len(self._pending[0]) <= self.max_rows:
            piece = self._pending.popleft()
            pieces.append(piece)
            total += len(piece)
        self._pending_rows -= total
        return pieces[0] if len(pieces) == 1 else concat_rows(pieces)

    def _on_subscribe(self, ch: int, start: int) -> None:
        if self.replays:
            early, self._early_start = self._early_start, False
            if not (early and start == self._emitted and not self._unacked):
                self._replay_from(start)  # else: the early start is what is asked for
            return
        # Rows sent but not acknowledged go out again from ``start``; older ones are gone.
        oldest = self._unacked[0][0] if self._unacked else self._emitted
        if not oldest <= start <= self._emitted:
            raise RuntimeError(
                f"downstream asked for position {start};"
                f" only {oldest}..{self._emitted} is available"
            )
        resend = [rows[max(0, start - pos) :] for pos, nxt, rows in self._unacked if nxt > start]
        self._unacked.clear()
        for rows in reversed(resend):
            self._pending.appendleft(rows)
            self._pending_rows += len(rows)
        self._emitted = start

    def _replay_from(self, start: int) -> None:
        self._inbox.clear()
        self._pending.clear()
        self._pending_rows = 0
        self._unacked.clear()
        self._emitted = start
        self._input_ended = self._eos_handled = self._output_ended = False
        self.reset()
        self.inp.restart(start)

    def _on_eos_acked(self, ch: int) -> None:
        self.inp.ack_eos()
        self.finish(self.summary())
