"""The master's limits on what one request or one client may make it keep.

Every limit is a config key (``MasterConfig``) and every refusal a
``LimitExceeded`` error reply; nothing of a refused request is kept.

* ``max-queued-fn-per-client``: function tasks one client has queued or running
  (``TasksByClient`` counts them as the queue's ``by_client`` map changes).
* ``max-job-spec-bytes`` and ``max-job-tasks``: a job is measured in full at
  submit, before any of it is recorded (a 100,000-task record would stall the
  master past its election lease).
* ``max-value-bytes``: one function task's argument or result. The master's
  channel refuses a chunked transfer announcing more before allocating it
  (``zdf.wire.bigmsg``), and tells clients and workers the limit at hello: a
  client refuses such an argument in ``submit`` (``LimitExceeded``), a worker
  fails a task whose result passes it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeVar

from zdf.errors import LimitExceeded
from zdf.jobs.spec import JobSpec
from zdf.wire.codec import packb

DEFAULT_MAX_QUEUED_PER_CLIENT = 50_000

V = TypeVar("V")


class TasksByClient(dict[tuple[bytes, int], V]):
    """``(client, task id) -> task``, with a count of entries per client."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[bytes] = Counter()

    def __setitem__(self, key: tuple[bytes, int], value: V) -> None:
        if key not in self:
            self.counts[key[0]] += 1
        super().__setitem__(key, value)

    def pop(self, key: tuple[bytes, int], default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            client = key[0]
            self.counts[client] -= 1
            if self.counts[client] <= 0:
                del self.counts[client]
        return super().pop(key, default)

    def check_room(self, client: bytes, adding: int, limit: int) -> None:
        held = self.counts.get(client, 0)
        if held + adding > limit:
            raise LimitExceeded(
                f"{held} function tasks of this client are queued or running; "
                f"{adding} more would pass the limit of {limit} (max-queued-fn-per-client)"
            )


def check_job(spec_data: dict[str, Any], spec: JobSpec, max_bytes: int, max_tasks: int) -> None:
    if len(spec.tasks) > max_tasks:
        raise LimitExceeded(f"a job of {len(spec.tasks)} tasks is over {max_tasks} (max-job-tasks)")
    size = len(packb(spec_data))
    if size > max_bytes:
        raise LimitExceeded(f"a job spec of {size} bytes is over {max_bytes} (max-job-spec-bytes)")
