"""A worker process: hosts tasks for its executor.

Started by the executor's pool as ``python -m zdf.executor.worker``. It connects
a DEALER to the executor's control socket, says ``ready``, and then runs what it
is sent: a ``function`` task is a call of a function named by import path, run
to completion; any other kind is a dataflow operator launched through
``zdf.runtime.launch`` and driven by this process's reactor until it reports
finished. The worker exits when its parent executor is gone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import psutil
import zmq

from zdf import protocol as P
from zdf.errors import JobError
from zdf.executor.fnrunner import FunctionRunner
from zdf.executor.limits import RoomCheck, raise_limits
from zdf.jobs.cost import task_cost
from zdf.jobs.spec import TaskSpec
from zdf.observe import fnout
from zdf.observe.logs import configure_logging, task_fields
from zdf.observe.taskout import CapturingReactor, TaskOutput, install
from zdf.wire import codec, security
from zdf.wire.addresses import WILDCARDS, advertised
from zdf.wire.batchcall import CallBatcher
from zdf.wire.codec import packb, unpackb
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import make_socket

log = logging.getLogger("zdf.worker")

PARENT_CHECK_INTERVAL = 0.2
PROGRESS_INTERVAL = 0.25


def import_object(path: str) -> Any:
    """'package.module:name' -> the object; a clear JobError otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise JobError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise JobError(f"{module_name!r} has no attribute {attr!r}") from None


class Worker:
    def __init__(
        self,
        ctl: str,
        name: str,
        host: str,
        ipc_dir: str,
        parent: int,
        master: str = "",
        executor_id: str = "",
        frozen_limit: float = 1.0,
        allow_pickle: bool = False,
        budget: int = 0,
        public_host: str = "",
        logs_dir: str = "",
        memory_limit: int = 0,
        spill_dir: str = "",
        same_host_dir: str = "",
    ) -> None:
        self.name = name
        # ipc:// twins of tcp:// data sockets, for peers on this host (zdf.runtime.hubaddr)
        self.same_host_dir = same_host_dir
        # Function results beyond ``memory_limit`` spill to ``spill_dir`` (zdf.executor.spill);
        # the files of a worker that died before this one are not ours to read.
        self.memory_limit = memory_limit
        self.spill_dir = spill_dir
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
        self.budget = budget  # descriptors its tasks may use (zdf.executor.limits)
        self.public_host = public_host  # published in place of ``host`` (advertise-addr)
        # The function tasks' direct port publishes where it binds: not a wildcard.
        self.fn_host = public_host if host in WILDCARDS and public_host else host
        self.room = RoomCheck(budget)
        self.allow_pickle = allow_pickle
        self.host = host
        self.ipc_dir = ipc_dir
        self.parent = parent
        # print() of a task goes to its attempt's file (zdf.observe.taskout)
        self.output = TaskOutput(logs_dir or os.path.join(ipc_dir or ".", "logs"))
        self.reactor: Reactor = CapturingReactor(self.output)
        self.tasks: dict[tuple[str, str], Any] = {}
        self.attempts: dict[tuple[str, str], int] = {}
        self.directory: dict[str, dict[tuple[str, str], str]] = {}
        self.watchers: dict[tuple[str, str, str], list[Callable[[str], None]]] = {}
        self.channel = Channel(
            self.reactor,
            # Unbounded like the executor's end (zdf.executor.server): nothing dropped.
            make_socket(zmq.DEALER, connect=ctl, identity=name.encode(), sndhwm=0, rcvhwm=0),
            {
                P.START_TASK: self.on_start_task,
                P.START_TASKS: self.on_start_tasks,
                P.CANCEL_TASK: self.on_cancel_task,
                P.ENDPOINTS: self.on_endpoints,
                "stop": lambda call: self.reactor.stop(),
                P.LEADER: self.on_leader,
            },
            name=f"worker-{name}",
        )
        # Reports, progress and publications to the executor, a turn's in one message.
        self.calls = CallBatcher(self.reactor, lambda: self.channel)
        self.executor_id = executor_id
        self._seen_registration: Any = None  # the executor's registration we said hello after
        # A function task's output, copied to its client (zdf.observe.fnout)
        self.fn_output = fnout.FunctionOutput(f"{executor_id}/{name}" if executor_id else name)
        self.functions = (
            FunctionRunner(
                self.reactor,
                master,
                executor_id,
                name,
                allow_pickle,
                self.fn_host,
                output=self.fn_output,
                memory_limit=memory_limit,
                spill_dir=spill_dir,
            )
            if master
            else None
        )
        self.frozen_limit = frozen_limit
        self._parent_proc = psutil.Process(parent)
        self._parent_stopped_since: float | None = None
        self.reactor.call_every(PARENT_CHECK_INTERVAL, self._check_parent)
        self.channel.notify("ready", {"pid": os.getpid(), "budget": budget})

    def _check_parent(self) -> None:
        if os.getppid() != self.parent:
            log.warning("executor %d is gone; worker %s exits", self.parent, self.name)
            self.reactor.stop()
            return
        # A frozen executor (SIGSTOP, a paused VM) is declared dead by the master after
        # the keepalive TTL and its tasks start elsewhere: stop being a zombie then.
        try:
            stopped = self._parent_proc.status() == psutil.STATUS_STOPPED
        except psutil.Error:
            stopped = False
        now = time.monotonic()
        if not stopped:
            self._parent_stopped_since = None
        elif self._parent_stopped_since is None:
            self._parent_stopped_since = now
        elif now - self._parent_stopped_since > self.frozen_limit:
            log.warning("executor %d frozen; worker %s exits", self.parent, self.name)
            self.reactor.stop()

    def run(self) -> None:
        try:
            self.reactor.run()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for handle in list(self.tasks.values()):
            cancel = getattr(handle, "cancel", None)
            if cancel is not None:
                cancel()
        self.calls.flush()
        self.channel.close()
        if self.functions is not None:
            self.functions.close()
        if self.spill_dir:  # its files went with the store: the directory goes too
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    # -- reports ------------------------------------------------------------
    def report(
        self,
        job_id: str,
        task_id: str,
        attempt: int,
        state: str,
        info: dict[str, Any] | None = None,
    ) -> None:
        if self.attempts.get((job_id, task_id)) != attempt:
            return
        body = {
            "job_id": job_id,
            "task_id": task_id,
            "attempt": attempt,
            "state": state,
            "info": info or {},
        }
        self.calls.notify(P.TASK_STATE, body)
        if state in ("finished", "failed", "canceled"):
            # Release what the task holds (sockets, timers, a sink's locked file): an idle
            # worker must not keep them for the next job (the same job run again would
            # wait for its own files' locks forever). A finishing operator has set its
            # sockets to linger, so what it sent last still goes out.
            handle = self.tasks.pop((job_id, task_id), None)
            self.attempts.pop((job_id, task_id), None)
            cancel = getattr(handle, "cancel", None)
            if cancel is not None:
                cancel()
            self.output.close(job_id, task_id)

    # -- handlers -----------------------------------------------------------
    def on_start_tasks(self, call: Call) -> Any:
        """The starts of a round (``zdf.master.starts``), each job's endpoints once."""
        body = P.fields(call.body, starts=list)
        endpoints = body.get("endpoints")
        starts = [P.fields(start, job_id=str, task=dict, attempt=int) for start in body["starts"]]
        specs = [TaskSpec.from_dict(start["task"]) for start in starts]  # all read, then run
        for job_id, entries in (endpoints if isinstance(endpoints, dict) else {}).items():
            self._learn(str(job_id), entries)
        for start, spec in zip(starts, specs, strict=True):
            self._start(start, spec)
        return None

    def _learn(self, job_id: str, entries: Any) -> None:
        table = self.directory.setdefault(job_id, {})
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, list) and len(entry) == 3:
                table[(str(entry[0]), str(entry[1]))] = str(entry[2])

    def on_start_task(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task=dict, attempt=int)
        self._learn(body["job_id"], body.get("endpoints") or [])
        self._start(body, TaskSpec.from_dict(body["task"]))
        return None

    def _start(self, body: dict[str, Any], spec: TaskSpec) -> None:
        job_id, attempt = body["job_id"], body["attempt"]
        key = (job_id, spec.task_id)
        superseded = self.tasks.pop(key, None)  # an earlier attempt of it, still here
        cancel = getattr(superseded, "cancel", None)
        if cancel is not None:
            cancel()
        self.attempts[key] = attempt
        self.report(
            job_id, spec.task_id, attempt, "running", {"worker": self.name, "pid": os.getpid()}
        )
        if spec.kind == "function":
            self.tasks[key] = None
            self.reactor.call_later(0, lambda: self._run_function(job_id, spec, attempt))
            return
        with self.output.scope(job_id, spec.task_id, attempt):
            self._launch(body, job_id, spec, attempt)

    def _launch(self, body: dict[str, Any], job_id: str, spec: TaskSpec, attempt: int) -> None:
        key = (job_id, spec.task_id)
        try:
            from zdf.executor.task_context import WorkerTaskContext
            from zdf.runtime import launch

            if self.budget:
                self.room.check(spec.task_id, task_cost(body["task"]))
            checkpoint = body.get("checkpoint")
            state = unpackb(checkpoint) if isinstance(checkpoint, bytes) else None
            ctx = WorkerTaskContext(self, job_id, spec, attempt, state)
            handle = launch(ctx, spec)
            if not handle.done:  # one that finished as it opened is closed and forgotten
                self.tasks[key] = handle
        except Exception as exc:
            log.exception(
                "task %s/%s failed to start",
                job_id,
                spec.task_id,
                extra=task_fields(job_id, spec.task_id, attempt),
            )
            traceback.print_exc()  # into the task's output, where `zdf logs` finds it
            self.report(job_id, spec.task_id, attempt, "failed", {"error": _describe(exc)})

    def _run_function(self, job_id: str, spec: TaskSpec, attempt: int) -> None:
        if self.attempts.get((job_id, spec.task_id)) != attempt:
            return  # canceled before it started
        with self.output.scope(job_id, spec.task_id, attempt):
            self._call_function(job_id, spec, attempt)

    def _call_function(self, job_id: str, spec: TaskSpec, attempt: int) -> None:
        started = time.perf_counter()
        try:
            fn = import_object(spec.operator)
            args = spec.params.get("args") or []
            kwargs = spec.params.get("kwargs") or {}
            result = fn(*args, **kwargs)
            try:
                packb(result)
            except (TypeError, ValueError):
                result = repr(result)
        except Exception as exc:
            traceback.print_exc()  # into the task's output, where `zdf logs` finds it
            self.report(job_id, spec.task_id, attempt, "failed", {"error": _describe(exc)})
            return
        elapsed = round(time.perf_counter() - started, 6)
        self.report(
            job_id, spec.task_id, attempt, "finished", {"result": result, "elapsed_s": elapsed}
        )

    def on_leader(self, call: Call) -> Any:
        """Take function tasks from this master from now on."""
        body = P.fields(call.body, addr=str)
        registration = body.get("registration")
        session = str(body.get("session") or "")
        if self.functions is not None and self.functions.master_addr == body["addr"]:
            if registration != self._seen_registration:
                # The master may have restarted at this address and forgotten us.
                self._seen_registration = registration
                self.functions.session = session
                self.functions.rejoin()
            return None
        self._seen_registration = registration
        if self.functions is not None:
            self.functions.close()
        self.functions = FunctionRunner(
            self.reactor,
            body["addr"],
            self.executor_id,
            self.name,
            self.allow_pickle,
            self.fn_host,
            session=session,
            output=self.fn_output,
            memory_limit=self.memory_limit,
            spill_dir=self.spill_dir,
        )
        return None

    def on_cancel_task(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, task_id=str)
        key = (body["job_id"], body["task_id"])
        handle = self.tasks.pop(key, None)
        self.attempts.pop(key, None)
        cancel = getattr(handle, "cancel", None)
        if cancel is not None:
            cancel()
        return None

    def on_endpoints(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str, endpoints=list)
        job_id = body["job_id"]
        table = self.directory.setdefault(job_id, {})
        for entry in body["endpoints"]:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            task_id, name, addr = (str(x) for x in entry)
            if table.get((task_id, name)) == addr:
                continue
            table[(task_id, name)] = addr
            for callback in list(self.watchers.get((job_id, task_id, name), [])):
                callback(addr)
        return None

    # -- the endpoint directory, for task contexts --------------------------
    def publish_endpoint(
        self, job_id: str, task_id: str, name: str, addr: str, attempt: int | None = None
    ) -> None:
        addr = advertised(addr, self.public_host)
        body: dict[str, Any] = {"job_id": job_id, "task_id": task_id, "name": name, "addr": addr}
        if attempt is not None:
            body["attempt"] = attempt
        self.calls.notify(P.PUBLISH_ENDPOINT, body)

    def resolve_endpoint(
        self, job_id: str, task_id: str, name: str, callback: Callable[[str], None]
    ) -> None:
        self.watchers.setdefault((job_id, task_id, name), []).append(callback)
        addr = self.directory.get(job_id, {}).get((task_id, name))
        if addr is not None:
            callback(addr)

    def forget(self, job_id: str, task_id: str, name: str, callback: Callable[[str], None]) -> None:
        """Stop telling ``callback`` of ``task_id``'s ``name`` (it was given to
        ``resolve_endpoint`` with these): one key's list, not every watcher of the
        worker (a thousand tasks ending together each walked them all)."""
        key = (job_id, task_id, name)
        callbacks = self.watchers.get(key)
        if callbacks is not None and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self.watchers[key]


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tb = traceback.format_exc(limit=8)
    return text if tb.strip() == "NoneType: None" else f"{text}\n{tb}"


def _warm_imports() -> None:
    """Import the runtime and the built-in operators before the first task arrives:
    a task should start in well under a millisecond, not after a module import."""
    import pkgutil

    import zdf.runtime.bench

    for module in pkgutil.iter_modules(zdf.runtime.bench.__path__, "zdf.runtime.bench."):
        importlib.import_module(module.name)
    import zdf.jobs.counter


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel send SIGTERM when the executor dies: the parent check
    runs between tasks only, and a function may block for minutes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zdf-worker")
    parser.add_argument("--ctl", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="where data sockets bind")
    parser.add_argument("--public-host", default="", help="the host others dial them at")
    parser.add_argument("--ipc-dir", default="")
    parser.add_argument("--logs-dir", default="", help="where tasks' output files go")
    parser.add_argument("--parent", type=int, default=os.getppid())
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--log-file", default="")
    parser.add_argument("--master", default="", help="master address for function tasks")
    parser.add_argument("--executor-id", default="")
    parser.add_argument(
        "--frozen-limit",
        type=float,
        default=1.0,
        help="exit when the executor is stopped this long",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="run pickled functions (see the README)"
    )
    parser.add_argument(
        "--sockets", type=int, default=0, help="descriptors its tasks may use (0: the limit)"
    )
    parser.add_argument(
        "--memory-limit", type=int, default=0, help="result bytes kept in memory (0: a share)"
    )
    parser.add_argument("--spill-dir", default="", help="where results beyond it spill")
    parser.add_argument(
        "--same-host-dir", default="", help="where tcp:// data sockets bind an ipc:// twin"
    )
    args = parser.parse_args(argv)
    budget = raise_limits(args.sockets)  # before any socket: libzmq reads MAX_SOCKETS once
    process = f"worker[{args.executor_id}/{args.name}]" if args.executor_id else args.name
    configure_logging(args.log_level, args.log_file, process, args.log_format)
    _warm_imports()
    security.configure(  # the executor's keys, handed down in the environment
        os.environ.get("ZDF_SECURITY_DIR", ""),
        "executor",
        insecure=os.environ.get("ZDF_INSECURE") == "true",
    )
    codec.set_max_depth(int(os.environ.get("ZDF_MAX_MESSAGE_DEPTH") or codec.DEFAULT_MAX_DEPTH))
    worker = Worker(
        args.ctl,
        args.name,
        args.host,
        args.ipc_dir,
        args.parent,
        args.master,
        args.executor_id,
        args.frozen_limit,
        args.allow_pickle,
        budget,
        args.public_host,
        args.logs_dir,
        args.memory_limit,
        args.spill_dir,
        args.same_host_dir,
    )

    def on_term(*_: object) -> None:
        # Unwind at once, from the poll or from inside a user's function alike.
        raise SystemExit(0)

    install(worker.output)
    fnout.install(worker.fn_output)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when workers stop
    die_with_parent(args.parent)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
