"""Dataflow operators: ``Source``, ``Transform`` and sinks, run in lock-step *steps*.

Theory of operation
-------------------
A stream is a sequence of **steps**. On every channel of every edge the sender
sends exactly one batch per step (``pos = step``, ``next = step + 1``), empty
when there is nothing for that channel, then end of stream at the number of
steps. A source's step ``s`` is its batch ``s`` (a pure function of its params,
instance and ``s``). A task with inputs processes step ``s`` once every input
channel has delivered its batch ``s`` (or has ended before ``s``), taking the
pieces in a fixed order (input by input, upstream instance by instance), and
sends what that produced as its own step ``s``. At the end of all inputs it
adds one last step (``end()``: what a keyed sum emits) and ends its stream.

So every batch on every channel is a deterministic function of the sources:
a task restarted anywhere produces the same bytes at the same steps, whatever
the timing. That is what exactly-once rests on, across any repartition:

* the pipe positions are steps, so a receiver that (re)subscribes from step
  ``s`` gets exactly the batches from ``s`` on (``zdf.runtime.pipe``);
* a sender keeps the batches it sent until they are acknowledged, and serves a
  resubscription from them; a resubscription ahead of what it has made (its
  receiver outlived the sender) skips the steps the receiver already has;
* a resubscription from behind what it still holds (its receiver was restarted
  and lost what it had taken in) rolls the task back: a ``stateless`` task
  (output step s depends on input step s only: map, filter, a source) back to
  ``s``, a stateful one back to step 0 with its state set up afresh; it
  subscribes its inputs again from there (which rolls its upstream back in
  turn when needed) and re-sends each channel only from where its receiver is;
* a sink that writes (``FileSink``) acknowledges a step only once it is on disk
  with the step number, and resumes after the last step it wrote.

Receivers align nothing by hand: one batch per step per channel *is* the
alignment, and a task's view of its inputs at step ``s`` is the same in every run.

Flow control is the pipes' credit (``window`` batches in flight per channel);
a task makes no new step while any output channel holds ``max_pending`` steps
not yet sent (``MAX_PENDING``; a source's 1: its batch is made when it can go,
so it is still in the cache when it is sent), so a slow or absent receiver
stops its upstream.

A task ends (``finish``) only when every task downstream of it has raised its
done flag (``Operator.when_done``), so that it is still there to replay for a
downstream task restarted late; a task with no downstream (a sink) raises its
flag once it has consumed its whole input.

Subclasses declare their output with the classmethod ``output_dtype(params,
inputs)`` (the job is validated with it before it is submitted) and override
``setup()`` (fresh state), ``process(rows, port)`` and ``end()``; a ``Source``
overrides ``steps()`` and ``batch(step)``. An operator that holds rows back says
so with ``can_step()`` (and calls ``pump()`` when it may go on); one that splits
its output itself serves ``custom`` edges with ``route()``; instances that must agree
among themselves (a barrier) message each other through ``peers()``.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from zdf.dataflow.dtypes import dtype_from_wire
from zdf.dataflow.partition import split
from zdf.dataflow.peers import Peers
from zdf.runtime.batches import concat_rows
from zdf.runtime.link import PeerLink
from zdf.runtime.operator import Operator
from zdf.runtime.pipe import DEFAULT_WINDOW, InPort, OutPort
from zdf.wire.rpc import Call

MAX_PENDING = 4
"""Steps an output channel may hold unsent before its task stops making new ones."""

Step = tuple[int, np.ndarray]


@dataclass
class _Channel:
    """One receiver of one output edge: what is not sent yet and what is not acked yet."""

    pending: deque[Step] = field(default_factory=deque)
    unacked: deque[Step] = field(default_factory=deque)
    next_send: int = 0  # the step the receiver expects next


@dataclass
class _Edge:
    port: OutPort
    partition: str
    key: str
    channels: list[_Channel]
    split: Callable[[np.ndarray, int], list[np.ndarray]]  # (rows, step) -> one per channel


@dataclass
class _Input:
    port: InPort
    index: int  # which input of the operator (its ``inputs`` entry) this channel belongs to
    queue: deque[np.ndarray] = field(default_factory=deque)
    end: int | None = None  # the step count, once the end of stream arrived


def input_dtype(inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
    """The dtype every input shares; ``ValueError`` when there is none or they differ."""
    if not inputs:
        raise ValueError("needs an input")
    first = inputs[0]
    for other in inputs[1:]:
        if other != first:
            raise ValueError(f"inputs of different dtypes: {first} and {other}")
    return first


class FlowOperator(Operator):
    """The step engine (see the module docstring); subclass ``Source`` or ``Transform``."""

    stateless: ClassVar[bool] = False
    """Output step s depends on input step s alone (a map, a filter): rolls back to s, not 0."""

    keyed: ClassVar[bool] = False

    max_pending: ClassVar[int] = MAX_PENDING
    """Steps an output channel may hold unsent before the task stops making new ones."""
    """Takes param ``key`` by default from its ``hash`` input's key."""

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        """The dtype of this operator's output for these input dtypes (None: a sink).

        Raise ``ValueError`` with a short reason when the inputs do not fit. By default:
        the one dtype all inputs share (``input_dtype``), unchanged."""
        return input_dtype(inputs)

    # -- to override --------------------------------------------------------------
    def setup(self) -> None:
        """Set up fresh state: at open, and again when the task rolls back to step 0."""

    def process(self, rows: np.ndarray, port: int) -> np.ndarray | None:
        """One input piece of the current step (``port``: which input); rows to emit."""
        return rows

    def end(self) -> np.ndarray | None:
        """Every input ended: the rows of the last step (a keyed sum's results)."""
        return None

    def after_step(self) -> np.ndarray | None:
        """Called once per step after its pieces: more rows for the same step (windows)."""
        return None

    def start_step(self) -> int:
        """The step to start from (a sink resuming after what it wrote); 0 by default."""
        return 0

    def step_done(self, step: int) -> None:
        """A step was processed and emitted (a sink makes it durable here)."""

    def can_step(self) -> bool:
        """Whether to take another step now (True by default).

        An operator that holds rows back (a sink waiting for a barrier, say) returns
        False while it holds too many: its inputs' batches then wait unacknowledged,
        which stops its upstream through the pipes' credit. It calls ``pump()`` once
        it may take steps again."""
        return True

    def pump(self) -> None:
        """Take steps while the inputs have them, the outputs have room and ``can_step()``."""
        self._pump()

    def route(self, rows: np.ndarray, channels: int, step: int) -> list[np.ndarray]:
        """Split this step's rows among the channels of a ``custom`` output edge.

        Override it when no built-in partition fits (some rows to one instance, others
        to all); it must be deterministic, as every other partition is."""
        raise NotImplementedError(f"{type(self).__name__} has no route() for a custom edge")

    def peers(
        self,
        name: str,
        handlers: Mapping[str, Callable[[Call], None]],
        *,
        on_connect: Callable[[int, PeerLink], None] | None = None,
    ) -> Peers:
        """Control messages among this task's instances over endpoint ``name``
        (``zdf.dataflow.peers``): call it once, from ``setup()`` or later."""
        return Peers(
            self,
            name,
            task=str(self.flow["name"]),
            instance=self.instance,
            count=self.parallelism,
            handlers=handlers,
            on_connect=on_connect,
        )

    def step_progress(self) -> dict[str, float]:
        """The counters reported after each step (rows taken in by default)."""
        return {"records": float(self.rows_in)}

    def completed(self) -> None:
        """The whole input is processed; by default a task with no downstream is done."""
        if not self.edges:
            self.mark_done()
            self.finish(self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.rows_in,
            "records_out": self.rows_out,
            "steps": self.step,
            "replayed": self.replayed,
        }

    # -- the engine ---------------------------------------------------------------------
    def open(self) -> None:
        flow = self.params["flow"]
        self.flow = flow
        self.instance = int(flow["instance"])
        self.parallelism = int(flow["parallelism"])
        self.user: dict[str, Any] = dict(flow.get("params") or {})
        out = flow.get("dtype")
        self.dtype: np.dtype[Any] | None = None if out is None else dtype_from_wire(out)
        self.step = self.start_step()  # the next step to make
        self.current_input = 0  # the ``inputs`` entry of the piece being processed
        self.live_inputs: list[bool] = []  # which input channels had a batch this step
        # Rows in and out of the steps before the current one (a roll-back takes them
        # back to the step it returns to: they count the stream, not the work), and
        # the rows taken in again after roll-backs.
        self.rows_in = self.rows_out = self.replayed = 0
        self._counts: list[tuple[int, int]] = [(0, 0)] * self.step  # at each step's start
        self.ended_at: int | None = None  # the output's step count, once known
        self._completed = False
        self._pump_soon = functools.partial(self.defer, self._pump)  # once per burst
        self.edges: list[_Edge] = []
        for spec in flow.get("outputs") or []:
            channels = int(spec["channels"])
            name = str(spec["port"])
            port = self.out_port(
                name,
                channels,
                on_credit=functools.partial(self._on_credit, len(self.edges)),
                on_subscribe=functools.partial(self._on_subscribe, len(self.edges)),
            )
            chans = [_Channel() for _ in range(channels)]
            partition, key = str(spec["partition"]), str(spec.get("key") or "")
            splitter = self._splitter(partition, key, channels)
            self.edges.append(_Edge(port, partition, key, chans, splitter))
        window = int(flow.get("window", DEFAULT_WINDOW))
        self.inputs: list[_Input] = []
        for spec in flow.get("inputs") or []:
            slot = len(self.inputs)
            inport = self.in_port(
                str(spec["task"]),
                str(spec["port"]),
                int(spec["channel"]),
                on_batch=functools.partial(self._on_batch, slot),
                on_eos=functools.partial(self._on_eos, slot),
                start=self.step,
                window=window,
                dtype=dtype_from_wire(spec["dtype"]),
            )
            self.inputs.append(_Input(inport, int(spec["index"])))
        # setup first: done flags already known (a task restarted late in its job) end
        # it at once, and its summary needs what setup made.
        self.setup()
        after = self.done_after()
        if after:
            self.when_done(after, self._downstream_done)
        self._pump_soon()

    # -- input ---------------------------------------------------------------------------
    def _on_batch(self, i: int, rows: np.ndarray, pos: int, next_pos: int) -> None:
        self.inputs[i].queue.append(rows)
        self._pump_soon()  # once for all the batches of a burst, not once per batch

    def _on_eos(self, i: int, pos: int) -> None:
        self.inputs[i].end = pos
        self._pump_soon()

    def _ready(self) -> bool:
        step = self.step
        for inp in self.inputs:
            if not inp.queue and (inp.end is None or inp.end > step):
                return False
        return True

    def _has_room(self) -> bool:
        for edge in self.edges:
            for chan in edge.channels:
                if len(chan.pending) >= self.max_pending:
                    return False
        return True

    def _pump(self) -> None:
        """Make steps while the inputs have them and the outputs have room."""
        while self.ended_at is None and self._has_room() and self._ready() and self.can_step():
            self._make_step()
        self._maybe_complete()

    def _count_step(self, step: int) -> None:
        if step == len(self._counts):
            self._counts.append((self.rows_in, self.rows_out))

    def _make_step(self) -> None:
        step = self.step
        self._count_step(step)
        out: list[np.ndarray] = []
        self.live_inputs = [bool(inp.queue) for inp in self.inputs]
        live = any(self.live_inputs)
        for slot, inp in enumerate(self.inputs):
            if inp.queue:
                rows = inp.queue.popleft()
                inp.port.ack()
                if len(rows):
                    self.rows_in += len(rows)
                    self.current_input = slot
                    made = self.process(rows, inp.index)
                    if made is not None and len(made):
                        out.append(made)
        if live:
            more = self.after_step()
        else:  # every input ended before this step: the last one
            more = self.end()
            self.ended_at = step + 1
        if more is not None and len(more):
            out.append(more)
        self._emit(step, out)
        self.step = step + 1
        self.step_done(step)
        if not live:
            for inp in self.inputs:
                inp.port.ack_eos()
        self.progress(**self.step_progress())  # the host rate-limits what it forwards

    # -- output ---------------------------------------------------------------------------
    def _emit(self, step: int, pieces: list[np.ndarray]) -> None:
        if not self.edges:
            return
        assert self.dtype is not None
        if not pieces:
            rows = np.empty(0, self.dtype)
        else:
            rows = pieces[0] if len(pieces) == 1 else concat_rows(pieces)
            if rows.dtype != self.dtype:
                raise TypeError(
                    f"{type(self).__name__} emitted rows of dtype {rows.dtype};"
                    f" it declared {self.dtype}"
                )
        self.rows_out += len(rows)
        for e, edge in enumerate(self.edges):
            parts = edge.split(rows, step)
            for chan, part in zip(edge.channels, parts, strict=True):
                if step >= chan.next_send + len(chan.pending):
                    chan.pending.append((step, part))
            self._flush(e)

    def _splitter(
        self, partition: str, key: str, n: int
    ) -> Callable[[np.ndarray, int], list[np.ndarray]]:
        """How an edge cuts a step's rows, chosen once (``zdf.dataflow.partition``)."""
        if n == 1 and partition != "custom":
            return lambda rows, step: [rows]  # every row to the one channel

        def cut(rows: np.ndarray, step: int) -> list[np.ndarray]:
            if partition == "custom" and len(rows):
                return self.route(rows, n, step)
            return split(rows, partition, n, key, step)

        return cut

    def _flush(self, e: int) -> None:
        edge = self.edges[e]
        port = edge.port
        for ch, chan in enumerate(edge.channels):
            while chan.pending and port.credit(ch) > 0:
                step, rows = chan.pending.popleft()
                port.send(ch, rows, step, step + 1)
                chan.unacked.append((step, rows))
                chan.next_send = step + 1
            if (
                self.ended_at is not None
                and not chan.pending
                and chan.next_send >= self.ended_at
                and port.subscribed(ch)
                and not port.eos_sent(ch)
            ):
                port.send_eos(ch, self.ended_at)

    def _on_credit(self, e: int, ch: int) -> None:
        edge = self.edges[e]
        chan = edge.channels[ch]
        while len(chan.unacked) > edge.port.in_flight(ch):
            chan.unacked.popleft()
        self._flush(e)
        self._pump_soon()

    def _on_subscribe(self, e: int, ch: int, start: int) -> None:
        chan = self.edges[e].channels[ch]
        # What the channel holds (sent and unacknowledged, then unsent) is contiguous
        # and may run ahead of ``self.step`` after a roll-back made for another channel.
        held = [*chan.unacked, *chan.pending]
        chan.unacked.clear()
        if (held and start >= held[0][0]) or (not held and start >= self.step):
            # Served from what is held; steps the receiver has already are skipped.
            chan.pending = deque(item for item in held if item[0] >= start)
            chan.next_send = start
        else:
            chan.pending.clear()
            chan.next_send = start
            self._roll_back(start if self.stateless else 0)
        self._pump_soon()

    def _roll_back(self, step: int) -> None:
        """Make the steps from ``step`` again (see the module docstring)."""
        self.log.info("rolling back from step %d to step %d", self.step, step)
        if step < len(self._counts):
            rows_in, self.rows_out = self._counts[step]
            self.replayed += self.rows_in - rows_in
            self.rows_in = rows_in
            del self._counts[step:]
        self.step = step
        self.ended_at = None
        self._completed = False
        for edge in self.edges:
            for chan in edge.channels:
                chan.pending = deque(item for item in chan.pending if item[0] < step)
        if not self.stateless:
            self.setup()
        for inp in self.inputs:
            inp.queue.clear()
            inp.end = None
            inp.port.ended = False
            inp.port.restart(step)

    # -- the end -----------------------------------------------------------------------------
    def _maybe_complete(self) -> None:
        if self.ended_at is None or self._completed:
            return
        if self.edges and not all(
            not chan.pending for edge in self.edges for chan in edge.channels
        ):
            return
        self._completed = True
        self.completed()

    def _downstream_done(self) -> None:
        self.mark_done()
        self.finish(self.summary())


class Transform(FlowOperator):
    """An operator with inputs and an output (see ``FlowOperator``)."""


class Source(FlowOperator):
    """An operator without inputs: ``steps()`` batches, batch ``s`` from ``batch(s)``.

    param ``rate`` (rows/s per instance, 0: as fast as it can): batch ``s`` is due
    ``s * batch_rows / rate`` seconds after the pace's start (wall clock, saved in
    the checkpoint, so that a restarted source catches up rather than starts over).
    The pace starts at ``pace_start()`` (now, by default); a source that shares a
    schedule with others returns None there and calls ``set_pace(t0)`` once it
    learns it: until then it makes no step.
    """

    stateless = True
    max_pending = 1  # a batch is made when it can go: made earlier, it would only wait
    batch_rows = 1
    _t0: float | None = None

    def restore(self, state: dict[str, Any]) -> None:
        t0 = state.get("t0")
        self._t0 = float(t0) if isinstance(t0, int | float) else None

    def snapshot(self) -> dict[str, Any]:
        return {"t0": self._t0}

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        raise NotImplementedError(f"{cls.__name__} must declare its output_dtype")

    def steps(self) -> int:
        raise NotImplementedError

    def batch(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def setup(self) -> None:
        self._steps = self.steps()
        self.rate = float(self.user.get("rate", 0) or 0)
        self._waking = False
        if self.rate > 0 and self._t0 is None:
            t0 = self.pace_start()
            if t0 is not None:
                self._t0 = t0
                self.checkpoint()

    @property
    def t0(self) -> float | None:
        """The wall-clock time of step 0 (None: unpaced, or a shared pace not known yet)."""
        return self._t0

    def pace_start(self) -> float | None:
        """The wall-clock time of step 0 of a paced source (None: learned later)."""
        return time.time()

    def set_pace(self, t0: float) -> None:
        """Step ``s`` is due at ``t0 + s * batch_rows / rate``; saved in the checkpoint."""
        if self._t0 is not None:
            return
        self._t0 = t0
        self.checkpoint()
        self.pump()

    def _ready(self) -> bool:
        if self.rate <= 0 or self.step >= self._steps:
            return True
        if self._t0 is None:
            return False  # a shared schedule not known yet: ``set_pace`` pumps

        delay = self._t0 + self.step * self.batch_rows / self.rate - time.time()
        if delay <= 0:
            return True
        if not self._waking:
            self._waking = True
            self.call_later(delay, self._wake)
        return False

    def _wake(self) -> None:
        self._waking = False
        self._pump()

    def _make_step(self) -> None:
        step = self.step
        if step >= self._steps:
            self.ended_at = step
            self._flush_all()
            return
        self._count_step(step)
        rows = self.batch(step)
        self.rows_in += len(rows)
        self._emit(step, [rows] if len(rows) else [])
        self.step = step + 1
        self.step_done(step)
        self.progress(**self.step_progress())

    def _flush_all(self) -> None:
        for e in range(len(self.edges)):
            self._flush(e)
