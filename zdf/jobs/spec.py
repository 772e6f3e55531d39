"""A job as the master sees it: a named list of task specs.

Job files are TOML; a builder per job type (``zdf.jobs.build_job``) validates the
file and expands it into a ``JobSpec``. The spec travels to the master as a plain
dict (msgpack) and every task to its executor as a ``TaskSpec`` dict.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from zdf.errors import JobError


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``operator`` is an import path ``module:Class`` (or ``module:function``).

    ``group`` names a placement group: the tasks of a job with the same group run
    on one executor, in one worker process (a stream's stages, so that their pipes
    stay inside a process: ``zdf.wire.inproc``).

    ``slot`` names a slot-sharing group: the tasks of a job with the same slot run
    on one executor and take one of its slots between them (a pipeline slice, as
    Flink's slot sharing; light tasks such as a paced source's producers join the
    slice they feed). Empty: the task's ``group`` if it has one, else a slot of
    its own (``slot_key``)."""

    task_id: str
    kind: str
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    slot: str = ""

    @property
    def slot_key(self) -> str:
        """The slot this task takes (shared with the tasks of the same key)."""
        return self.slot or self.group or f"task:{self.task_id}"

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every param, which costs on the hot path.
        out = {
            "task_id": self.task_id,
            "kind": self.kind,
            "operator": self.operator,
            "params": self.params,
        }
        if self.group:
            out["group"] = self.group
        if self.slot:
            out["slot"] = self.slot
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TaskSpec:
        if not isinstance(data, dict):
            raise JobError("a task spec must be a map")
        try:
            spec = cls(
                task_id=str(data["task_id"]),
                kind=str(data["kind"]),
                operator=str(data["operator"]),
                params=dict(data.get("params") or {}),
                group=str(data.get("group") or ""),
                slot=str(data.get("slot") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise JobError(f"bad task spec: {exc}") from None
        if not spec.task_id or ":" not in spec.operator:
            raise JobError(f"bad task spec {spec.task_id!r}: operator must be module:name")
        return spec


BATCH_JOB_TYPES = frozenset({"function"})
"""Job types whose tasks run as slots free up; any other job is placed whole (gang)."""


@dataclass(frozen=True)
class JobSpec:
    name: str
    job_type: str
    tasks: list[TaskSpec]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def gang(self) -> bool:
        """All tasks at once or none: a streaming job's tasks need each other."""
        return self.job_type not in BATCH_JOB_TYPES

    @functools.cached_property
    def slots_needed(self) -> int:
        """Slots the whole job takes (one per slot-sharing group)."""
        return len({t.slot_key for t in self.tasks})

    @functools.cached_property
    def as_dict(self) -> dict[str, Any]:
        """``to_dict()`` computed once (a spec never changes)."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_dict_header(), "tasks": [t.to_dict() for t in self.tasks]}

    def to_dict_header(self) -> dict[str, Any]:
        """The spec without its tasks (a submission in parts sends its tasks apart)."""
        return {"name": self.name, "job_type": self.job_type, "settings": self.settings}

    @classmethod
    def from_dict(cls, data: Any, staged: list[TaskSpec] | None = None) -> JobSpec:
        """Validate a job spec; ``staged``: its tasks, validated already (sent in parts,
        ``zdf.master.staging``), the spec's own ``tasks`` then being empty."""
        if not isinstance(data, dict):
            raise JobError("a job spec must be a map")
        tasks = data.get("tasks")
        if staged is not None:
            if tasks:
                raise JobError("a job sent in parts has no tasks of its own")
            specs = staged
        elif not isinstance(tasks, list) or not tasks:
            raise JobError("a job needs at least one task")
        else:
            specs = [TaskSpec.from_dict(t) for t in tasks]
            ids = [t.task_id for t in specs]
            if len(set(ids)) != len(ids):
                raise JobError("task ids must be unique within a job")
        if not specs:
            raise JobError("a job needs at least one task")
        settings = data.get("settings") or {}
        if not isinstance(settings, dict):
            raise JobError("job settings must be a map")
        return cls(str(data.get("name") or "job"), str(data.get("job_type") or ""), specs, settings)
