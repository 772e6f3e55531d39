"""Placement: which executor runs which slot of a job.

The unit of placement is a *slot*: the tasks of one job that share a slot
(``TaskSpec.slot_key``: a pipeline slice, Flink's slot sharing) go to one
executor together and take one of its slots between them; a task sharing with
no other takes a slot of its own.

``place_tasks`` is a pure function so it can be tested alone: units go, one by
one, to the live executor with the most free slots (spread), ties broken by
fewest units of the same job there, then by id, so a job fans out across the
cluster. It places as many units as fit (a batch job: each task runs when a
slot frees up). ``place_gang`` places all the units or none: a streaming job
started in part would only hold slots that its other tasks need (a capacity
deadlock); when they do not all fit it returns a ``Shortfall`` that says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    executor_id: str
    free_slots: int


@dataclass(frozen=True)
class Shortfall:
    """A job that does not fit: what it needs and what the cluster has free now."""

    needed: int
    free: int
    executors: int

    def __str__(self) -> str:
        slots = "slot" if self.needed == 1 else "slots"
        executors = "executor" if self.executors == 1 else "executors"
        return f"needs {self.needed} {slots}, {self.free} free on {self.executors} {executors}"


def place_tasks(
    units: Iterable[str],
    capacity: Iterable[Capacity],
    job_load: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Map unit -> executor id for as many units as there are free slots, spread."""
    free = {c.executor_id: c.free_slots for c in capacity if c.free_slots > 0}
    same_job: Counter[str] = Counter(job_load or {})
    placement: dict[str, str] = {}
    for unit in units:
        if not free:
            break
        best = min(free, key=lambda e: (-free[e], same_job[e], e))
        placement[unit] = best
        same_job[best] += 1
        free[best] -= 1
        if free[best] == 0:
            del free[best]
    return placement


def place_gang(
    units: Sequence[str],
    capacity: Sequence[Capacity],
    job_load: Mapping[str, int] | None = None,
) -> dict[str, str] | Shortfall:
    """Every unit placed (spread as ``place_tasks``), or a ``Shortfall`` and none."""
    free = sum(max(0, c.free_slots) for c in capacity)
    if len(units) > free:
        return Shortfall(len(units), free, len(capacity))
    return place_tasks(units, capacity, job_load)
