"""A task started again after the tasks it waits on are done: it ends at once, with the
summary its setup makes possible (a source restarted late in its job, after a master
failover, failed on a summary read before its setup)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.runtime.helpers import FakeContext
from zdf.dataflow.operator import Source
from zdf.jobs.spec import TaskSpec
from zdf.runtime.launch import launch
from zdf.runtime.operator import DONE

pytestmark = pytest.mark.timeout(30)


class Counted(Source):
    """A source whose summary reads what its setup made."""

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        return np.dtype([("key", "<i8")])

    def setup(self) -> None:
        super().setup()
        self.made = 5

    def steps(self) -> int:
        return 1

    def batch(self, step: int) -> np.ndarray:
        return np.zeros(1, dtype=self.output_dtype({}, []))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "made": self.made}


class DoneAlready(FakeContext):
    """Every done flag asked for is known already: the answer comes at once."""

    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        if name == DONE:
            callback("done")
        else:
            super().resolve_endpoint(task_id, name, callback)


def test_a_source_whose_downstream_is_done_ends_at_once_with_its_summary() -> None:
    flow = {"instance": 0, "parallelism": 1, "params": {}, "dtype": None}
    ctx = DoneAlready("src", {"flow": flow, "done-after": ["sink"]})
    spec = TaskSpec("src", "source", f"{__name__}:Counted", ctx.params)
    handle = launch(ctx, spec)
    try:
        assert ctx.failed is None
        assert ctx.finished is not None and ctx.finished["made"] == 5
    finally:
        handle.operator.close()
        ctx.reactor.close()
