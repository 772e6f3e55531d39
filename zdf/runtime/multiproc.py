"""Run the tasks of a job in spawned child processes, for real parallelism.

By default each task gets its own process; ``processes=N`` deals the tasks over
N processes, each hosting several tasks on one reactor as an executor's worker
does. The parent is a tiny host: a ROUTER ``Channel`` that is the job's
endpoint directory and collects the reports. Each child imports its operators,
connects a DEALER, says ``hello`` and waits for ``start``; the parent sends
``start`` to all children at once when every task has said hello, so process
start-up is not measured as job time. A child launches its tasks, serves them
until each has reported, hands each report to the parent (a request, so it is
known to have arrived) and exits. So a child that exits with a task unreported
died (a crash, a kill, a failed start-up): the run fails at once, naming it.

Protocol (``zdf.wire`` envelopes):

    child -> parent   hello {tasks} | publish {task, name, addr} | resolve {task, name}
                      progress {task, counters} | finished {task, summary} (req)
                      failed {task, error} (req)
    parent -> child   start {} | endpoint {task, name, addr}
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import zmq

from zdf.errors import JobError, Timeout, ZdfError
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.runtime.context import TaskContext
from zdf.runtime.launch import TaskHandle, launch, load_operator
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import make_socket

log = logging.getLogger(__name__)

REPORT_TIMEOUT = 5.0
JOIN_TIMEOUT = 5.0
CHILD_CHECK_INTERVAL = 0.2  # how often the parent looks for children that died


class _ChildHost:
    """What the tasks of one child process share: the reactor and the parent link."""

    def __init__(self, reactor: Reactor, parent: Channel) -> None:
        self.reactor = reactor
        self.parent = parent
        self.watchers: dict[tuple[str, str], list[Callable[[str], None]]] = defaultdict(list)
        self.known: dict[tuple[str, str], str] = {}
        self.unreported: set[str] = set()

    def on_endpoint(self, call: Call) -> None:
        body = call.body
        key = (str(body["task"]), str(body["name"]))
        addr = str(body["addr"])
        if self.known.get(key) == addr:
            return
        self.known[key] = addr
        for callback in list(self.watchers.get(key, [])):
            callback(addr)


class ChildContext(TaskContext):
    """The ``TaskContext`` of a task in a child process (talks to the parent)."""

    def __init__(self, host: _ChildHost, job_id: str, spec: TaskSpec, ipc: str | None) -> None:
        self.job_id = job_id
        self.task_id = spec.task_id
        self.attempt = 0
        self.params = dict(spec.params)
        self.reactor = host.reactor
        self.host = "127.0.0.1"
        self.ipc_dir = ipc
        self.child = host
        self.reported = False
        self.cpu_at_start = time.process_time()

    def publish_endpoint(self, name: str, addr: str) -> None:
        self.child.parent.notify("publish", {"task": self.task_id, "name": name, "addr": addr})

    def resolve_endpoint(self, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        key = (task_id, name)
        self.child.watchers[key].append(callback)
        if key in self.child.known:
            callback(self.child.known[key])
        self.child.parent.notify("resolve", {"task": task_id, "name": name})

    def report_progress(self, counters: dict[str, float]) -> None:
        pass  # the bench runner has no use for it; a real host rate-limits and forwards

    def report_finished(self, summary: dict[str, Any]) -> None:
        self._report("finished", {"task": self.task_id, "summary": summary})

    def report_failed(self, error: str) -> None:
        self._report("failed", {"task": self.task_id, "error": error})

    def _report(self, op: str, body: dict[str, Any]) -> None:
        if self.reported:
            return
        self.reported = True
        # CPU of the whole process since "start": per task when a process hosts one.
        body["cpu_s"] = round(time.process_time() - self.cpu_at_start, 4)

        def done(result: Any, error: ZdfError | None) -> None:
            self.child.unreported.discard(self.task_id)
            if not self.child.unreported:
                self.reactor.stop()

        self.child.parent.request(op, body, timeout=REPORT_TIMEOUT, callback=done)


def _child_main(
    spec_dicts: list[dict[str, Any]], job_id: str, parent_addr: str, ipc: str | None
) -> None:
    logging.basicConfig(level=logging.WARNING)
    specs = [TaskSpec.from_dict(d) for d in spec_dicts]
    for spec in specs:
        load_operator(spec.operator)  # import before "hello": start-up is not job time
    reactor = Reactor()
    handles: list[TaskHandle] = []
    contexts: list[ChildContext] = []

    def start(call: Call) -> None:
        for ctx, spec in zip(contexts, specs, strict=True):
            ctx.cpu_at_start = time.process_time()
            try:
                handles.append(launch(ctx, spec))
            except ZdfError as exc:
                ctx.report_failed(str(exc))

    sock = make_socket(zmq.DEALER, connect=parent_addr)
    channel = Channel(reactor, sock, {"start": start}, name="child")
    host = _ChildHost(reactor, channel)
    channel.handlers["endpoint"] = host.on_endpoint
    host.unreported = {spec.task_id for spec in specs}
    contexts.extend(ChildContext(host, job_id, spec, ipc) for spec in specs)
    channel.notify("hello", {"tasks": [spec.task_id for spec in specs]})
    profile_dir = os.environ.get("ZDF_PROFILE_DIR")  # debugging: one cProfile dump per process
    try:
        if profile_dir:
            import cProfile

            name = "+".join(spec.task_id for spec in specs)[:100]
            cProfile.runctx(
                "reactor.run()",
                globals(),
                {"reactor": reactor},
                os.path.join(profile_dir, f"{name}.prof"),
            )
        else:
            reactor.run()
    finally:
        for handle in handles:
            handle.cancel()
        channel.close()
        zmq.Context.instance().term()


def deal(tasks: list[TaskSpec], count: int) -> list[list[TaskSpec]]:
    """Tasks over ``count`` processes in order: a task of a placement group joins its
    group, any other goes to the process with the fewest tasks (the first on a tie),
    as ``zdf.executor`` places them on its workers."""
    groups: list[list[TaskSpec]] = [[] for _ in range(count)]
    home: dict[str, int] = {}
    for task in tasks:
        at = home.get(task.group) if task.group else None
        if at is None:
            at = min(range(count), key=lambda i: (len(groups[i]), i))
            if task.group:
                home[task.group] = at
        groups[at].append(task)
    return [group for group in groups if group]  # more processes than groups: fewer used


class MultiProcessRunner:
    """Spawn one process per task of ``job`` and run them to completion."""

    def __init__(
        self,
        job: JobSpec,
        *,
        job_id: str | None = None,
        use_ipc: bool = True,
        processes: int | None = None,
    ) -> None:
        """``processes``: how many child processes host the tasks (default: one per task),
        tasks dealt as an executor's worker pool deals them (``deal``)."""
        self.job = job
        if processes is None:
            self.groups = [[task] for task in job.tasks]
        else:
            self.groups = deal(job.tasks, max(1, min(processes, len(job.tasks))))
        self.job_id = job_id or job.name
        self.reactor = Reactor()
        self.tmp = tempfile.mkdtemp(prefix="zdf-mp-")
        self.ipc_dir = self.tmp if use_ipc else None
        self.addresses: dict[tuple[str, str], str] = {}
        self.watchers: dict[tuple[str, str], set[bytes]] = defaultdict(set)
        self.peers: dict[str, bytes] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds per task, start-up excluded
        self.started_at = 0.0
        self.processes: list[BaseProcess] = []
        addr = f"ipc://{self.tmp}/parent.sock" if use_ipc else "tcp://127.0.0.1:*"
        sock = make_socket(zmq.ROUTER, bind=addr)
        self.addr = sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
        handlers = {
            "hello": self._on_hello,
            "publish": self._on_publish,
            "resolve": self._on_resolve,
            "progress": lambda call: None,
            "finished": self._on_finished,
            "failed": self._on_failed,
        }
        self.channel = Channel(self.reactor, sock, handlers, name="multiproc")

    def _on_hello(self, call: Call) -> None:
        assert call.peer is not None
        for task in call.body["tasks"]:
            self.peers[str(task)] = call.peer
        if len(self.peers) == len(self.job.tasks):
            self.started_at = time.monotonic()
            for peer in set(self.peers.values()):
                self.channel.notify("start", {}, peer=peer)

    def _on_publish(self, call: Call) -> None:
        key = (str(call.body["task"]), str(call.body["name"]))
        self.addresses[key] = addr = str(call.body["addr"])
        for peer in self.watchers[key]:
            self.channel.notify(
                "endpoint", {"task": key[0], "name": key[1], "addr": addr}, peer=peer
            )

    def _on_resolve(self, call: Call) -> None:
        assert call.peer is not None
        key = (str(call.body["task"]), str(call.body["name"]))
        self.watchers[key].add(call.peer)
        if key in self.addresses:
            body = {"task": key[0], "name": key[1], "addr": self.addresses[key]}
            self.channel.notify("endpoint", body, peer=call.peer)

    def _on_finished(self, call: Call) -> dict[str, bool]:
        task = str(call.body["task"])
        self.finished[task] = dict(call.body.get("summary") or {})
        self.cpu[task] = float(call.body.get("cpu_s") or 0.0)
        return {"ok": True}

    def _on_failed(self, call: Call) -> dict[str, bool]:
        self.failed[str(call.body["task"])] = str(call.body.get("error"))
        return {"ok": True}

    def _check_children(self) -> None:
        """A child that exited leaves its unfinished tasks failed (not a wait to the end)."""
        for group, proc in zip(self.groups, self.processes, strict=False):
            if proc.exitcode is None:
                continue
            for spec in group:
                if spec.task_id not in self.finished and spec.task_id not in self.failed:
                    self.failed[spec.task_id] = f"its process exited with code {proc.exitcode}"

    def run(self, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
        ctx = multiprocessing.get_context("spawn")
        for group in self.groups:
            proc = ctx.Process(
                target=_child_main,
                args=([s.to_dict() for s in group], self.job_id, self.addr, self.ipc_dir),
                name=f"zdf-{group[0].task_id}",
                daemon=True,
            )
            proc.start()
            self.processes.append(proc)
        deadline = time.monotonic() + timeout
        watch = self.reactor.call_every(CHILD_CHECK_INTERVAL, self._check_children)
        try:
            self.reactor.run(
                until=lambda: len(self.finished) == len(self.job.tasks) or bool(self.failed),
                deadline=deadline,
            )
        finally:
            watch.cancel()
        if self.failed:
            task, error = next(iter(self.failed.items()))
            raise JobError(f"task {task} failed: {error}")
        if len(self.finished) != len(self.job.tasks):
            waiting = sorted(t.task_id for t in self.job.tasks if t.task_id not in self.finished)
            raise Timeout(f"job {self.job_id} not finished in {timeout}s; waiting on {waiting}")
        return dict(self.finished)

    def close(self) -> None:
        for proc in self.processes:
            proc.join(JOIN_TIMEOUT if not self.failed else 0.1)
            if proc.is_alive():
                proc.kill()
                proc.join(JOIN_TIMEOUT)
        self.processes.clear()
        self.channel.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> MultiProcessRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_multiprocess(
    job: JobSpec, *, timeout: float = 120.0, use_ipc: bool = True, processes: int | None = None
) -> dict[str, Any]:
    """Run ``job`` in child processes; return each task's summary by task id."""
    with MultiProcessRunner(job, use_ipc=use_ipc, processes=processes) as runner:
        return runner.run(timeout)


if __name__ == "__main__":  # pragma: no cover - a manual entry for quick measurements
    import sys
    import tomllib

    from zdf.jobs import build_job

    path = sys.argv[1]
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    if len(sys.argv) > 2:
        data["sink-dir"] = sys.argv[2]
    procs = int(sys.argv[3]) if len(sys.argv) > 3 else None
    with MultiProcessRunner(build_job(data, path), processes=procs) as runner:
        print(runner.run()["coordinator"])
        print({k: v for k, v in sorted(runner.cpu.items(), key=lambda kv: -kv[1])})
