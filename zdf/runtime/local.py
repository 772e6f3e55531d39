"""Run every task of a job in this process, on one reactor (tests, quick demos).

``LocalRunner`` is the smallest complete host: a dict is the endpoint directory,
reports land in dicts, and ``run()`` drives the reactor until every task has
finished, one has failed, or the deadline passed. Endpoint callbacks are
delivered on the next reactor turn, never from inside ``publish_endpoint``, so
operators see the same ordering as under a real executor.

``restart(task_ids)`` plays an executor's death in-process: the tasks stop (or,
with ``zombies=True``, keep running while their reports and checkpoints are
refused, as a hung executor's workers do) and start again with attempt + 1 from
their last checkpoint, so failover can be tested in milliseconds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from zdf.errors import JobError, Timeout
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime.context import TaskContext
from zdf.runtime.launch import TaskHandle, launch
from zdf.wire.reactor import Reactor

EndpointKey = tuple[str, str]


class EndpointDirectory:
    """(task_id, name) -> address, with watchers told of every change."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.addresses: dict[EndpointKey, str] = {}
        self._watchers: dict[EndpointKey, list[Callable[[str], None]]] = {}

    def publish(self, key: EndpointKey, addr: str) -> None:
        self.addresses[key] = addr
        for callback in self._watchers.get(key, []):
            self._deliver(callback, addr)

    def watch(self, key: EndpointKey, callback: Callable[[str], None]) -> None:
        self._watchers.setdefault(key, []).append(callback)
        if key in self.addresses:
            callback(self.addresses[key])  # at once, as an executor's worker does

    def _deliver(self, callback: Callable[[str], None], addr: str) -> None:
        self.reactor.call_later(0.0, lambda: callback(addr))


class LocalContext(TaskContext):
    def __init__(self, runner: LocalRunner, spec: TaskSpec, attempt: int = 0) -> None:
        self.runner = runner
        self.job_id = runner.job_id
        self.task_id = spec.task_id
        self.attempt = attempt
        self.params = dict(spec.params)
        self.reactor = runner.reactor
        self.host = runner.host
        self.ipc_dir = runner.ipc_dir
        self.progress: dict[str, float] = {}

    def publish_endpoint(self, name: str, addr: str) -> None:
        self.runner.directory.publish((self.task_id, name), addr)

    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        self.runner.directory.watch((task_id, name), callback)

    @property
    def current(self) -> bool:
        """False for a zombie: its task was started again with a later attempt."""
        return self.runner.attempts.get(self.task_id, self.attempt) == self.attempt

    def report_progress(self, counters: dict[str, float]) -> None:
        self.progress.update(counters)

    def report_finished(self, summary: dict[str, Any]) -> None:
        if self.current:
            self.runner.finished[self.task_id] = summary

    def report_failed(self, error: str) -> None:
        if self.current:
            self.runner.failed[self.task_id] = error

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self.runner.checkpoints.get(self.task_id)

    def save_checkpoint(
        self, state: dict[str, Any], on_saved: Callable[[], None] | None = None
    ) -> None:
        if not self.current:
            self.runner.refused[self.task_id] += 1  # as the master refuses a stale attempt
            return
        self.runner.checkpoints[self.task_id] = state
        if on_saved is not None:
            self.reactor.call_later(0.0, on_saved)


class LocalRunner:
    """All tasks of ``job`` on one reactor; ``use_ipc`` picks ipc:// over tcp:// loopback."""

    def __init__(
        self,
        job: JobSpec,
        *,
        job_id: str | None = None,
        host: str = "127.0.0.1",
        use_ipc: bool = True,
        reactor: Reactor | None = None,
    ) -> None:
        self.job = job
        self.job_id = job_id or job.name
        self.host = host
        self.reactor = reactor or Reactor()
        self.directory = EndpointDirectory(self.reactor)
        self._tmp = tempfile.mkdtemp(prefix="zdf-") if use_ipc else None
        self.ipc_dir = self._tmp
        self.handles: dict[str, TaskHandle] = {}
        self.contexts: dict[str, LocalContext] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, int] = {}
        self.refused: Counter[str] = Counter()
        self.zombies: list[TaskHandle] = []

    def start(self, tasks: Iterable[TaskSpec] | None = None) -> None:
        for spec in self.job.tasks if tasks is None else tasks:
            self._launch(spec, self.attempts.get(spec.task_id, 0))

    def _launch(self, spec: TaskSpec, attempt: int) -> None:
        ctx = LocalContext(self, spec, attempt)
        self.attempts[spec.task_id] = attempt
        self.contexts[spec.task_id] = ctx
        self.handles[spec.task_id] = launch(ctx, spec)

    def restart(self, task_ids: Iterable[str], *, zombies: bool = False) -> list[str]:
        """Start these unfinished tasks again (attempt + 1, last checkpoint); see above."""
        specs = {t.task_id: t for t in self.job.tasks}
        moved = [t for t in task_ids if t not in self.finished and t in self.handles]
        for task_id in moved:
            old = self.handles.pop(task_id)
            if zombies:
                self.zombies.append(old)
            else:
                old.cancel()
        for task_id in moved:
            self._launch(specs[task_id], self.attempts[task_id] + 1)
        return moved

    def stop_zombies(self) -> None:
        for handle in self.zombies:
            handle.cancel()
        self.zombies.clear()

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self.job.tasks)

    def run(self, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Start (if not yet) and run until all tasks finish; raise on failure or timeout."""
        if not self.handles:
            self.start()
        deadline = time.monotonic() + timeout
        self.reactor.run(until=lambda: self.all_finished or bool(self.failed), deadline=deadline)
        if self.failed:
            task, error = next(iter(self.failed.items()))
            raise JobError(f"task {task} failed: {error}")
        if not self.all_finished:
            waiting = sorted(t.task_id for t in self.job.tasks if t.task_id not in self.finished)
            raise Timeout(f"job {self.job_id} not finished in {timeout}s; waiting on {waiting}")
        return dict(self.finished)

    def close(self) -> None:
        self.stop_zombies()
        for handle in self.handles.values():
            handle.cancel()
        self.handles.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_local(job: JobSpec, *, timeout: float = 60.0, use_ipc: bool = True) -> dict[str, Any]:
    """Run ``job`` in this process; return each task's summary by task id."""
    with LocalRunner(job, use_ipc=use_ipc) as runner:
        return runner.run(timeout)
