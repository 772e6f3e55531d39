"""A small stateful operator: counts to ``target``, checkpointing as it goes.

Used by the failover tests and as the shortest example of a user operator: a
task restarted from its checkpoint resumes from the saved count instead of 0.

    [[tasks]] in a job spec: TaskSpec("count", "counter", "zdf.jobs.counter:Counter",
                                     {"target": 1000, "every": 0.01, "checkpoint_each": 10})
"""

from __future__ import annotations

from typing import Any

from zdf.runtime.operator import Operator


class Counter(Operator):
    def restore(self, state: dict[str, Any]) -> None:
        self.count = int(state.get("count", 0))
        self.resumed_from = self.count

    def open(self) -> None:
        self.count = getattr(self, "count", 0)
        self.resumed_from = getattr(self, "resumed_from", 0)
        self.target = int(self.params.get("target", 100))
        self.checkpoint_each = max(1, int(self.params.get("checkpoint_each", 10)))
        self.call_every(float(self.params.get("every", 0.01)), self.tick)

    def snapshot(self) -> dict[str, Any]:
        return {"count": self.count}

    def tick(self) -> None:
        if self.done:
            return
        self.count += 1
        self.progress(records=self.count)
        if self.count % self.checkpoint_each == 0:
            self.checkpoint()
        if self.count >= self.target:
            self.finish({"count": self.count, "resumed_from": self.resumed_from})
