"""Where a function task may go: learnt durations, prefetch depth, resources.

Theory of operation. The rule placement keeps is "while any worker process is
idle, no task waits behind another". A worker runs its tasks one after
another, so a task sent to a busy worker waits; it is worth it only where the
wait is shorter than the round trip that fetching it later would cost. So:

- Durations are learnt per function path (``Durations``: a running average of
  what workers report, as Dask keeps one per task prefix). A function of
  unknown duration goes one task at a time to a worker with nothing in flight.
- A worker takes more than one task only while the work it has in flight
  (the sum of the estimates) stays under ``FEED_SECONDS``: enough to keep it
  fed across a round trip to the master, no more. Tasks of a few microseconds
  are thus sent in batches (up to the window), and tasks of 50 ms one by one.
- A burst is shared out: in one pass, no worker takes more than its share of
  what is queued (queued / workers with room), so 64 short tasks on four idle
  workers run on all four.
- Resources: an executor advertises what it has (``{"cpu": N, "gpu": M}``;
  ``cpu`` defaults to its number of workers). A task asks for some (default
  one cpu). A worker runs its tasks one at a time, so it holds the largest
  demand among the tasks it has in flight; an executor's holds may not exceed
  what it advertised. A task that no executor could ever hold is infeasible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from zdf.errors import ProtocolError

FEED_SECONDS = 0.005  # the work a worker may have waiting behind its current task
DURATION_WEIGHT = 0.5  # weight of the newest duration in the running average (Dask: 1/2)
MAX_FUNCTIONS = 10_000  # durations kept; the oldest are forgotten beyond this
DEFAULT_DEMAND: dict[str, float] = {"cpu": 1.0}

Resources = dict[str, float]


class Durations:
    """A running average of the seconds a call of each function path takes."""

    def __init__(self) -> None:
        self.average: dict[str, float] = {}

    def estimate(self, fn: str) -> float | None:
        """Seconds a call of ``fn`` is expected to take (None: never seen)."""
        return self.average.get(fn)

    def learn(self, fn: str, seconds: float) -> None:
        if seconds < 0:
            return
        old = self.average.get(fn)
        if old is None:
            if len(self.average) >= MAX_FUNCTIONS:
                del self.average[next(iter(self.average))]
            self.average[fn] = seconds
        else:
            self.average[fn] = old + DURATION_WEIGHT * (seconds - old)


def parse_demand(value: Any) -> Resources | None:
    """A task's ``resources`` option: name -> a non-negative amount (None: the default)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ProtocolError("resources must map names to non-negative numbers")
    demand = {k: float(v) for k, v in value.items() if v}
    return None if demand == DEFAULT_DEMAND else demand


def covers(have: Mapping[str, float], want: Mapping[str, float]) -> bool:
    return all(have.get(name, 0.0) >= amount for name, amount in want.items())


def union(a: Mapping[str, float], b: Mapping[str, float]) -> Resources:
    """What a worker holds to run tasks of demands ``a`` and ``b`` one after another."""
    out = dict(a)
    for name, amount in b.items():
        if amount > out.get(name, 0.0):
            out[name] = amount
    return out


class Holder(Protocol):
    inflight: set[int]
    demands: dict[int, Resources]


def hold(worker: Holder) -> Resources:
    """What ``worker`` holds now: the largest demand of the tasks it has in flight."""
    if not worker.inflight:
        return {}
    held = dict(DEFAULT_DEMAND) if len(worker.demands) < len(worker.inflight) else {}
    for demand in worker.demands.values():
        held = union(held, demand)
    return held


def fits(
    worker: Holder,
    demand: Resources | None,
    capacity: Mapping[str, float],
    siblings: Iterable[Holder],
) -> bool:
    """Whether ``worker`` can take a task of ``demand`` without its executor (whose
    workers are ``siblings``, ``worker`` among them) holding more than ``capacity``."""
    want = demand or DEFAULT_DEMAND
    mine = hold(worker)
    if covers(mine, want):
        return True
    total: Resources = {}
    for sibling in siblings:
        held = union(mine, want) if sibling is worker else hold(sibling)
        for name, amount in held.items():
            total[name] = total.get(name, 0.0) + amount
    return covers(capacity, total)


def describe(demand: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(demand.items()))
