"""Large submissions in parts: the tasks of a big job arrive a few thousand at a time.

A job of 100,000 tasks is a message of megabytes; decoding and checking it in one
handler would stop the master's loop for longer than its election lease. So the
client (``zdf.jobs.submit``) sends the tasks first, in parts (``submit_part``,
each with the submission's token and its index), then the job without tasks
(``submit_job`` with ``parts``). Each part is validated when it arrives (every
task spec, ids unique across the parts), and what the commit will need is made
then too: the spec pieces the metastore keeps (``zdf.master.persist``) and the
largest task cost. The commit only joins them; nothing of the job is kept before
it, and a part that is invalid refuses the whole submission.

Stagings are bounded: ``MAX_STAGINGS`` at once, ``MAX_STAGED_TASKS`` each, and
one not committed within ``STAGING_TTL`` seconds is dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from zdf.errors import JobError
from zdf.jobs.cost import task_cost
from zdf.jobs.spec import TaskSpec
from zdf.master.jobs import JobManager, TaskRecord
from zdf.master.persist import spec_pieces

MAX_STAGINGS = 16
MAX_STAGED_TASKS = 1_000_000
MAX_PART_TASKS = 50_000
STAGING_TTL = 300.0


@dataclass
class Staged:
    created: float
    job_id: str
    slot_keys: set[str] = field(default_factory=set)
    records: dict[int, dict[str, TaskRecord]] = field(default_factory=dict)
    parts: dict[int, list[TaskSpec]] = field(default_factory=dict)
    raw: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    pieces: dict[int, list[bytes]] = field(default_factory=dict)  # for the metastore
    ids: set[str] = field(default_factory=set)
    max_cost: int = 0

    def tasks(self, count: int) -> list[TaskSpec]:
        missing = [i for i in range(count) if i not in self.parts]
        if missing or len(self.parts) != count:
            raise JobError(f"a submission in {count} parts lacks parts {missing[:5]}")
        return [task for i in range(count) for task in self.parts[i]]

    def task_records(self, count: int) -> dict[str, TaskRecord]:
        """The job's task records, in the order of its parts."""
        out: dict[str, TaskRecord] = {}
        for i in range(count):
            out.update(self.records[i])
        return out

    def task_dicts(self, count: int) -> list[dict[str, Any]]:
        return [task for i in range(count) for task in self.raw[i]]

    def all_pieces(self, count: int) -> list[bytes]:
        return [piece for i in range(count) for piece in self.pieces[i]]


class SubmissionStaging:
    def __init__(self) -> None:
        self._staged: dict[str, Staged] = {}

    def add_part(self, token: str, index: int, tasks: Any) -> int:
        """Validate and keep a part; the number of tasks staged under ``token``."""
        self._expire()
        if not isinstance(tasks, list) or not 0 < len(tasks) <= MAX_PART_TASKS:
            raise JobError(f"a part is a list of 1 to {MAX_PART_TASKS} task specs")
        if not 0 <= index < MAX_STAGED_TASKS:
            raise JobError(f"bad part index {index}")
        staged = self._staged.get(token)
        if staged is None:
            if len(self._staged) >= MAX_STAGINGS:
                raise JobError(f"too many submissions in parts at once (at most {MAX_STAGINGS})")
            staged = self._staged[token] = Staged(time.monotonic(), JobManager.new_job_id())
        if index in staged.parts:  # a part sent again (a retry): the first stands
            return len(staged.ids)
        specs = [TaskSpec.from_dict(t) for t in tasks]
        ids = {t.task_id for t in specs}
        if len(ids) != len(specs) or not staged.ids.isdisjoint(ids):
            self.drop(token)
            raise JobError("task ids must be unique within a job")
        if len(staged.ids) + len(ids) > MAX_STAGED_TASKS:
            self.drop(token)
            raise JobError(f"a job has at most {MAX_STAGED_TASKS:,} tasks")
        staged.parts[index] = specs
        staged.slot_keys.update(t.slot_key for t in specs)
        staged.records[index] = {t.task_id: TaskRecord(staged.job_id, t) for t in specs}
        staged.raw[index] = [t.to_dict() for t in specs]
        staged.pieces[index] = spec_pieces(staged.raw[index])
        staged.ids |= ids
        staged.max_cost = max(staged.max_cost, max(task_cost(t) for t in staged.raw[index]))
        return len(staged.ids)

    def take(self, token: str) -> Staged:
        staged = self._staged.pop(token, None)
        if staged is None:
            raise JobError("no parts were staged for this submission (or they expired)")
        return staged

    def drop(self, token: str) -> None:
        self._staged.pop(token, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._staged.items() if now - s.created > STAGING_TTL]:
            del self._staged[token]
