"""Operators and a context for tests: slowed-down and gated variants of the bench tasks."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zdf.jobs.spec import JobSpec
from zdf.runtime.bench.gate import Stop
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.receive import Receive
from zdf.runtime.bench.sink import Sink
from zdf.runtime.context import TaskContext
from zdf.runtime.local import LocalRunner
from zdf.runtime.operator import Operator
from zdf.runtime.stream import StreamOperator
from zdf.wire import Reactor


def params(**kw: Any) -> BenchParams:
    """Small bench params for operator tests; ``kw`` overrides."""
    base = dict(
        flow_id="f",
        tables=3,
        streams=3,
        rcd_cnt=1000,
        ddl_freq=100,
        batch_size=128,
        rate=0.0,
        sink_dir="/nonexistent",
        window=4,
    )
    return BenchParams(**{**base, **kw})  # type: ignore[arg-type]


class GatedReceive(Receive):
    """A receive that takes no input while ``gated`` (a stalled stream)."""

    def open(self) -> None:
        self.gated = bool(self.params.get("gated", True))
        super().open()

    def can_accept(self) -> bool:
        return not self.gated and super().can_accept()

    def open_gate(self) -> None:
        self.gated = False
        self.pump()


class SlowReceive(Receive):
    """Processes one input batch per ``delay`` seconds (a lagging stream)."""

    def open(self) -> None:
        self.delay = float(self.params.get("delay", 0.002))
        self._ready = True
        super().open()

    def can_accept(self) -> bool:
        return self._ready and super().can_accept()

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        self._ready = False
        self.call_later(self.delay, self._tick)
        return rows

    def _tick(self) -> None:
        self._ready = True
        self.pump()


class StallTableSink(Sink):
    """Withholds its arrivals at every DDL of table ``stall-table`` until ``open_gate()``
    (one table's barrier stalled by one stream; the other tables' go on)."""

    def open(self) -> None:
        self.stall_table = int(self.params.get("stall-table", 0))
        self.withheld: list[Stop] = []
        self.gated = True
        super().open()

    def _stopped(self, stops: list[Stop]) -> None:
        if self.gated:
            self.withheld += [s for s in stops if s.table == self.stall_table]
            stops = [s for s in stops if s.table != self.stall_table]
        super()._stopped(stops)

    def open_gate(self) -> None:
        self.gated = False
        withheld, self.withheld = self.withheld, []
        self.guard(lambda: super(StallTableSink, self)._stopped(withheld))()


class SlowSink(Sink):
    """Gives credit back ``delay`` seconds after writing each batch (a slow disk)."""

    def consumed(self) -> None:
        self.call_later(float(self.params.get("delay", 0.003)), self.inp.ack)


class Doubler(StreamOperator):
    """A user-written operator: doubles every pk (shows the StreamOperator API)."""

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        out = rows.copy()
        out["pk"] *= 2
        return out


class Collector(StreamOperator):
    """Keeps every row it gets; finishes at the end of its input."""

    def open(self) -> None:
        self.rows: list[np.ndarray] = []
        super().open()

    def process(self, rows: np.ndarray) -> np.ndarray | None:
        self.rows.append(rows.copy())
        return None

    def on_end_of_stream(self) -> None:
        self.inp.ack_eos()
        self.finish({"records": self.rows_in})


class FakeContext(TaskContext):
    """A context for driving one operator by hand; endpoints go to a dict."""

    def __init__(self, task_id: str, params: dict[str, Any], reactor: Reactor | None = None):
        self.job_id = "job"
        self.task_id = task_id
        self.attempt = 0
        self.params = params
        self.reactor = reactor or Reactor()
        self.host = "127.0.0.1"
        self.ipc_dir = None
        self.published: dict[str, str] = {}
        self.resolving: dict[tuple[str, str], Callable[[str], None]] = {}
        self.finished: dict[str, Any] | None = None
        self.failed: str | None = None

    def publish_endpoint(self, name: str, addr: str) -> None:
        self.published[name] = addr

    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        self.resolving[(task_id, name)] = callback

    def report_progress(self, counters: dict[str, float]) -> None:
        pass

    def report_finished(self, summary: dict[str, Any]) -> None:
        self.finished = summary

    def report_failed(self, error: str) -> None:
        self.failed = error


class ExitAtOpen(StreamOperator):
    """Its process dies as the task opens (an operator that crashes its host)."""

    def open(self) -> None:
        os._exit(3)


class PortThenFinish(Operator):
    """Binds a port, starts a timer and finishes after ``ticks`` ticks (param; 0: as it
    opens, as a sink restarted from a "done" checkpoint does; -1: never).

    Every instance is kept in ``made``, so a test can look at it after its host let go."""

    made: list[PortThenFinish] = []

    def open(self) -> None:
        PortThenFinish.made.append(self)
        self.ticks = int(self.params.get("ticks", 2))
        self.out = self.out_port("out", 1, on_credit=lambda ch: None)
        self.call_every(0.01, self._tick)
        if self.ticks == 0:
            self.finish({"ticks": "none"})

    def _tick(self) -> None:
        self.ticks -= 1
        if self.ticks == 0:
            self.finish({"ticks": "done"})


def run_with_failures(
    job: JobSpec,
    seed: int,
    failures: int,
    *,
    zombies: bool = False,
    gap: float = 0.15,
    linger: float = 0.05,
) -> LocalRunner:
    """Run ``job`` in this process, restarting random tasks ``failures`` times, each up
    to ``gap`` seconds after the last; with ``zombies`` the old copies run on for up to
    ``linger`` seconds beside their replacements. Same ``seed``, same choices."""
    rng = random.Random(seed)
    with LocalRunner(job) as runner:
        runner.start()
        for _ in range(failures):
            at = time.monotonic() + rng.uniform(0.0, gap)
            runner.reactor.run(
                until=lambda: runner.all_finished or bool(runner.failed), deadline=at
            )
            alive = sorted(t for t in runner.handles if t not in runner.finished)
            if not alive or runner.failed:
                break
            victims = rng.sample(alive, rng.randint(1, max(1, len(alive) // 2)))
            runner.restart(victims, zombies=zombies)
            if zombies:  # the zombies run on a little while their replacements start
                until = time.monotonic() + rng.uniform(0.0, linger)
                runner.reactor.run(until=lambda: False, deadline=until)
                runner.stop_zombies()
        runner.run(timeout=60)
        return runner
