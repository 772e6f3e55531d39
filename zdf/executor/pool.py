"""The executor's pool of worker processes, started ahead of time.

Workers are separate interpreters started with ``python -m zdf.executor.worker``
(never forked: a fork would copy sockets and, in a metastore, an open LevelDB).
Each connects a DEALER, with its slot name as identity, to the executor's
control ROUTER over ipc:// and says ``ready``. The pool polls its children;
one that died is reaped, reported through ``on_exit`` and started again.
Workers also watch their parent and exit when it is gone, so a kill -9 of the
executor leaves no orphans behind.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

STOP_GRACE = 2.0
UNKNOWN_ROOM = 1 << 30
"""The room of a worker that did not say its budget: not counted."""


@dataclass
class WorkerSlot:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    tasks: set[tuple[str, str]] = field(default_factory=set)
    functions: int = 0  # function tasks here; a function occupies its worker until it returns
    restarts: int = 0
    budget: int = 0  # descriptors its tasks may use (zdf.executor.limits); 0: not known
    costs: dict[tuple[str, str], int] = field(default_factory=dict)  # task -> descriptors
    used: int = 0  # the sum of costs
    jobs: Counter[str] = field(default_factory=Counter)  # tasks here by job

    def room(self) -> int:
        return self.budget - self.used if self.budget else UNKNOWN_ROOM

    def add_task(self, key: tuple[str, str], cost: int) -> None:
        self.drop_task(key)
        self.tasks.add(key)
        self.costs[key] = cost
        self.used += cost
        self.jobs[key[0]] += 1

    def drop_task(self, key: tuple[str, str]) -> None:
        if key not in self.tasks:
            return
        self.tasks.discard(key)
        self.used -= self.costs.pop(key, 0)
        self.jobs[key[0]] -= 1
        if self.jobs[key[0]] <= 0:
            del self.jobs[key[0]]

    def clear(self) -> None:
        self.tasks.clear()
        self.costs.clear()
        self.jobs.clear()
        self.used = 0

    @property
    def identity(self) -> bytes:
        return self.name.encode()


class WorkerPool:
    def __init__(
        self,
        count: int,
        ctl_addr: str,
        host: str,
        ipc_dir: str,
        log_level: str,
        on_exit: Callable[[WorkerSlot, int], None],
        executor_id: str = "",
        frozen_limit: float = 1.0,
        allow_pickle: bool = False,
        sockets: int = 0,
        log_format: str = "text",
        log_file: str = "",
        public_host: str = "",
        logs_dir: str = "",
        memory_limit: int = 0,
        spill_dir: str = "",
        same_host_dir: str = "",
    ) -> None:
        self.same_host_dir = same_host_dir  # ipc:// twins of tcp:// data sockets
        self.memory_limit = memory_limit  # one worker's, in bytes (zdf.executor.spill)
        self.spill_dir = spill_dir  # each worker spills into a directory of its own here
        self.logs_dir = logs_dir  # tasks' output files (zdf.observe.taskout)
        self.sockets = sockets
        self.log_format = log_format
        self.log_file = log_file  # the executor's: its workers' lines go there too
        self.public_host = public_host
        self.frozen_limit = frozen_limit
        self.allow_pickle = allow_pickle
        self.executor_id = executor_id
        self.ctl_addr = ctl_addr
        self.host = host
        self.ipc_dir = ipc_dir
        self.log_level = log_level
        self.on_exit = on_exit
        self.slots = {f"w{i}": WorkerSlot(f"w{i}") for i in range(count)}

    def start(self) -> None:
        for slot in self.slots.values():
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.ready = False
        slot.clear()
        slot.functions = 0
        cmd = [
            sys.executable,
            "-m",
            "zdf.executor.worker",
            "--ctl",
            self.ctl_addr,
            "--name",
            slot.name,
            "--host",
            self.host,
            "--ipc-dir",
            self.ipc_dir,
            "--parent",
            str(os.getpid()),
            "--frozen-limit",
            str(self.frozen_limit),
            "--log-level",
            self.log_level,
            "--executor-id",
            self.executor_id,
            "--log-format",
            self.log_format,
            "--log-file",
            self.log_file,
        ]
        if self.allow_pickle:
            cmd.append("--allow-pickle")
        if self.sockets:
            cmd += ["--sockets", str(self.sockets)]
        if self.public_host:
            cmd += ["--public-host", self.public_host]
        if self.logs_dir:
            cmd += ["--logs-dir", self.logs_dir]
        if self.spill_dir:
            cmd += ["--spill-dir", os.path.join(self.spill_dir, slot.name)]
        if self.memory_limit:
            cmd += ["--memory-limit", str(self.memory_limit)]
        if self.same_host_dir:
            cmd += ["--same-host-dir", self.same_host_dir]
        slot.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def mark_ready(self, name: str, budget: int = 0) -> WorkerSlot | None:
        slot = self.slots.get(name)
        if slot is not None:
            slot.ready = True
            slot.budget = budget
        return slot

    def budget(self) -> int:
        """The smallest budget of a ready worker: what one task may take at most."""
        return min((s.budget for s in self.slots.values() if s.ready), default=0)

    def all_ready(self) -> bool:
        return all(s.ready for s in self.slots.values())

    def least_loaded(
        self, function: bool = False, prefer: str | None = None, cost: int = 0
    ) -> WorkerSlot | None:
        """The ready worker with the fewest tasks; for a function, only an idle one;
        only one with room for ``cost`` descriptors.

        ``prefer`` names a worker to take if it is ready (a placement group's)."""
        ready = [
            s
            for s in self.slots.values()
            if s.ready and not (function and s.functions) and s.room() >= cost
        ]
        for slot in ready:
            if slot.name == prefer:
                return slot
        return min(ready, key=lambda s: (s.functions, len(s.tasks), s.name)) if ready else None

    def reap(self) -> None:
        """Called on a timer: restart any worker that exited."""
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None:
                continue
            log.warning("worker %s (pid %d) exited with %s", slot.name, slot.proc.pid, code)
            self.on_exit(slot, code)
            slot.restarts += 1
            self._spawn(slot)

    def restart(self, slot: WorkerSlot) -> None:
        """Replace a worker (to stop a function that cannot be interrupted); reaped by ``reap``."""
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.terminate()
        slot.ready = False

    def stop(self) -> None:
        procs = [s.proc for s in self.slots.values() if s.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for slot in self.slots.values():
            slot.proc = None
