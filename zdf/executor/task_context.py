"""The ``TaskContext`` of a task hosted by a worker process.

Reports travel worker -> executor -> master; the endpoint directory is the
worker's copy of the job's published endpoints, kept current by the master's
``endpoints`` events, so a resolve answers at once when the address is known
and again whenever it changes (a task restarted elsewhere).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zdf import protocol as P
from zdf.errors import Timeout, ZdfError
from zdf.jobs.spec import TaskSpec
from zdf.observe.logs import task_fields
from zdf.runtime.context import TaskContext
from zdf.wire.codec import packb

if TYPE_CHECKING:
    from zdf.executor.worker import Worker

PROGRESS_INTERVAL = 0.25
CHECKPOINT_TIMEOUT = 10.0

log = logging.getLogger(__name__)


class WorkerTaskContext(TaskContext):
    def __init__(
        self,
        worker: Worker,
        job_id: str,
        spec: TaskSpec,
        attempt: int,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        self.worker = worker
        self.job_id = job_id
        self.task_id = spec.task_id
        self.attempt = attempt
        self.params = dict(spec.params)
        self.reactor = worker.reactor
        self.host = worker.host
        self.ipc_dir = worker.ipc_dir or None
        self.same_host_dir = worker.same_host_dir or None
        # The first report waits an interval too: a task that ends sooner (a producer of
        # a 1,000-table job) reports its counters once, with its finish.
        self._last_progress = time.monotonic()
        self._callbacks: list[tuple[str, str, Callable[[str], None]]] = []
        self._checkpoint = checkpoint

    def publish_endpoint(self, name: str, addr: str) -> None:
        self.worker.publish_endpoint(self.job_id, self.task_id, name, addr, self.attempt)

    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        self._callbacks.append((task_id, name, callback))
        self.worker.resolve_endpoint(self.job_id, task_id, name, callback)

    def report_progress(self, counters: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        body = {
            "job_id": self.job_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "counters": counters,
        }
        self.worker.calls.notify(P.PROGRESS, body)

    def report_finished(self, summary: dict[str, Any]) -> None:
        self._flush_progress(summary)
        self.worker.report(self.job_id, self.task_id, self.attempt, "finished", summary)
        self._forget()

    def report_failed(self, error: str) -> None:
        self.worker.report(self.job_id, self.task_id, self.attempt, "failed", {"error": error})
        self._forget()

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self._checkpoint

    def save_checkpoint(
        self, state: dict[str, Any], on_saved: Callable[[], None] | None = None
    ) -> None:
        """Send the state to the master; ``on_saved`` runs once it is durable there.

        A refusal (this attempt was superseded: the task runs elsewhere now) fails
        the task, so a zombie stops instead of writing on."""
        body = {
            "job_id": self.job_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "state": packb(state),
        }

        def saved(result: Any, error: ZdfError | None) -> None:
            if error is None:
                if on_saved is not None:
                    on_saved()
            elif isinstance(error, Timeout) or error.data.get("retry"):
                log.warning(
                    "checkpoint of %s not taken now (%s)",
                    self.task_id,
                    error,
                    extra=task_fields(self.job_id, self.task_id, self.attempt),
                )
            else:
                # Stop the operator too: a zombie must not go on writing after its
                # replacement started (reporting alone leaves it running).
                handle = self.worker.tasks.get((self.job_id, self.task_id))
                self.report_failed(f"checkpoint refused: {error}")
                if handle is not None and getattr(handle, "ctx", None) is self:
                    handle.cancel()

        self.worker.channel.request(P.CHECKPOINT, body, timeout=CHECKPOINT_TIMEOUT, callback=saved)

    def _flush_progress(self, summary: dict[str, Any]) -> None:
        records = summary.get("records")
        if isinstance(records, int | float):
            self._last_progress = 0.0
            self.report_progress({"records": float(records)})

    def _forget(self) -> None:
        for task_id, name, callback in self._callbacks:
            self.worker.forget(self.job_id, task_id, name, callback)
        self._callbacks.clear()
