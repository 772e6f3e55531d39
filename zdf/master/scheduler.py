"""Placement: which executor runs which task.

``place_tasks`` is a pure function so it can be tested alone: tasks go, one by
one, to the live executor with the most free slots (spread), ties broken by
fewest tasks of the same job there, then by id, so a job's tasks fan out across
the cluster. A task of a placement group (``TaskSpec.group``) goes where its
group already is, while that executor has a free slot: a stream's stages stay
together so their pipes stay inside one process. A task that finds no free slot
stays unplaced (Pending).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    executor_id: str
    free_slots: int


def place_tasks(
    task_ids: Iterable[str],
    capacity: Iterable[Capacity],
    job_load: Mapping[str, int] | None = None,
    groups: Mapping[str, str] | None = None,
    homes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map task id -> executor id for as many tasks as there are free slots.

    ``groups``: task id -> its placement group; ``homes``: group -> the executor
    already running some of it (placements made here are added as they go)."""
    free = {c.executor_id: c.free_slots for c in capacity if c.free_slots > 0}
    same_job: Counter[str] = Counter(job_load or {})
    group_of = groups or {}
    home = dict(homes or {})
    placement: dict[str, str] = {}
    for task_id in task_ids:
        if not free:
            break
        group = group_of.get(task_id, "")
        best = home.get(group) if group else None
        if best not in free:
            best = min(free, key=lambda e: (-free[e], same_job[e], e))
        placement[task_id] = best
        if group:
            home.setdefault(group, best)
        same_job[best] += 1
        free[best] -= 1
        if free[best] == 0:
            del free[best]
    return placement
