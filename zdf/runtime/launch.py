"""The entry a host calls to run a task: ``launch(ctx, spec) -> TaskHandle``."""

from __future__ import annotations

import importlib
from typing import Any

from zdf.errors import JobError
from zdf.jobs.spec import TaskSpec
from zdf.runtime.context import TaskContext
from zdf.runtime.operator import Operator


def load_operator(path: str) -> type[Operator]:
    """Import ``"module:Class"`` and check that it is an ``Operator`` subclass."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise JobError(f"operator {path!r}: expected module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise JobError(f"operator {path!r}: cannot import {module_name}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise JobError(f"operator {path!r}: {module_name} has no {attr}")
    if not isinstance(obj, type) or not issubclass(obj, Operator):
        raise JobError(f"operator {path!r} is not a zdf.runtime.Operator subclass")
    return obj


class TaskHandle:
    """A running task as its host sees it."""

    def __init__(self, ctx: TaskContext, operator: Operator) -> None:
        self.ctx = ctx
        self.operator = operator

    @property
    def task_id(self) -> str:
        return self.ctx.task_id

    @property
    def done(self) -> bool:
        """True once the task reported finished or failed."""
        return self.operator.done

    def snapshot(self) -> dict[str, Any]:
        return self.operator.snapshot()

    def cancel(self) -> None:
        """Close the operator and every socket and timer it made; idempotent."""
        self.operator.close()


def launch(ctx: TaskContext, spec: TaskSpec) -> TaskHandle:
    """Build the spec's operator with ``ctx``, restore its checkpoint, open it.

    Raises ``JobError`` (after releasing whatever was made) when the operator
    cannot be imported, built or opened; the host reports that as the task's
    failure. Later failures arrive through ``ctx.report_failed``.
    """
    cls = load_operator(spec.operator)
    try:
        operator = cls(ctx)
    except Exception as exc:
        raise JobError(f"task {spec.task_id}: {spec.operator} failed to start: {exc}") from exc
    try:
        state = ctx.load_checkpoint()
        if state:
            operator.restore(state)
        operator.open()
    except Exception as exc:
        operator.close()
        raise JobError(f"task {spec.task_id}: {spec.operator} failed to open: {exc}") from exc
    return TaskHandle(ctx, operator)
