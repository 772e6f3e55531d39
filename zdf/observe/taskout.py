"""A task's stdout and stderr, kept per attempt on its executor (bounded, rotated).

Theory of operation: a worker process hosts several tasks on one reactor, so
the output of ``print()`` cannot be split by file descriptor. Instead the
worker replaces ``sys.stdout`` and ``sys.stderr`` with ``TaskStream`` routers and
runs each piece of a task's code inside ``TaskOutput.scope(job, task,
attempt)``: while a scope is open, what is written goes to that attempt's file,
``<logs-dir>/<job>/<task>.<attempt>.log`` (both streams, in order; stderr lines
are what a traceback is); outside any scope it goes to the worker's own stream.
The scope follows a task's code into its callbacks: ``CapturingReactor``
(the worker's reactor) binds every reader and timer registered inside a scope
to that scope, so a batch handler's ``print`` lands in its task's file too.
Callbacks registered outside a scope (the worker's own) are not wrapped and
cost nothing. A file that reaches ``max_bytes`` is moved to ``.log.1`` (the one
before is dropped) and a new one begun, so a chatty task keeps at most twice
``max_bytes`` on disk.

A disk that is full (or failing) never fails the task: an attempt's output that
cannot be written is given up (``lost``: one warning in the worker's log names
the attempt and the reason) and goes to the worker's own stream instead, and a
write there that fails too is dropped. Output is a record of the task, not its
result.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from zdf.wire.reactor import Callback, Reactor, Timer

MAX_BYTES = 1 << 20
"""Bytes of one attempt's output kept in its current file (as much again in ``.1``)."""
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

Key = tuple[str, str, int]
log = logging.getLogger(__name__)


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text) or "_"


def log_path(logs_dir: str, job_id: str, task_id: str, attempt: int) -> str:
    return os.path.join(logs_dir, safe_name(job_id), f"{safe_name(task_id)}.{attempt}.log")


class TaskOutput:
    """The open output files of this worker's task attempts, and the scope now open."""

    def __init__(self, logs_dir: str, max_bytes: int = MAX_BYTES) -> None:
        self.logs_dir = logs_dir
        self.max_bytes = max_bytes
        self.current: Key | None = None
        self._files: dict[Key, IO[str]] = {}
        self.lost: dict[Key, str] = {}

    @contextmanager
    def scope(self, job_id: str, task_id: str, attempt: int) -> Iterator[None]:
        outer, self.current = self.current, (job_id, task_id, attempt)
        try:
            yield
        finally:
            self.current = outer

    def bind(self, callback: Callback) -> Callback:
        """``callback`` run inside the scope open now (itself when none is)."""
        key = self.current
        if key is None:
            return callback

        def scoped() -> None:
            outer, self.current = self.current, key
            try:
                callback()
            finally:
                self.current = outer

        return scoped

    def write(self, text: str) -> bool:
        """Write to the current attempt's file; False when no scope is open or its
        output could not be kept (see the module docstring)."""
        key = self.current
        if key is None or key in self.lost:
            return False
        try:
            fh = self._files.get(key)
            if fh is None:
                path = log_path(self.logs_dir, *key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = self._files[key] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            fh.write(text)
            fh.flush()
            if fh.tell() >= self.max_bytes:
                self._rotate(key, fh)
        except OSError as exc:
            self._give_up(key, exc)
            return False
        return True

    def _give_up(self, key: Key, exc: OSError) -> None:
        self.lost[key] = exc.strerror or str(exc)
        fh = self._files.pop(key, None)
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass  # what it could not flush is lost with the rest
        log.warning(
            "the output of task %s/%s attempt %d is not kept from here on: %s (%s)",
            *key,
            self.lost[key],
            self.logs_dir,
        )

    def _rotate(self, key: Key, fh: IO[str]) -> None:
        fh.close()
        path = log_path(self.logs_dir, *key)
        os.replace(path, path + ".1")
        self._files[key] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def close(self, job_id: str, task_id: str) -> None:
        """Close the files of a task that ended (a later write opens them again)."""
        for key in [k for k in self._files if k[:2] == (job_id, task_id)]:
            try:
                self._files.pop(key).close()
            except OSError:
                pass  # a full disk: what was not flushed is lost (see ``write``)
        for key in [k for k in self.lost if k[:2] == (job_id, task_id)]:
            del self.lost[key]


class TaskStream:
    """``sys.stdout``/``sys.stderr`` of a worker: to the open task's file, else through."""

    def __init__(self, output: TaskOutput, through: IO[str]) -> None:
        self.output = output
        self.through = through

    def write(self, text: str) -> int:
        if not self.output.write(text):
            try:
                self.through.write(text)
            except OSError:
                pass  # nowhere left to write it; a print must not fail the task
        return len(text)

    def flush(self) -> None:
        self.through.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.through.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.through, name)


def install(output: TaskOutput) -> None:
    """Route this process's ``print()`` and tracebacks through ``output``."""
    sys.stdout = TaskStream(output, sys.__stdout__ or sys.stdout)  # type: ignore[assignment]
    sys.stderr = TaskStream(output, sys.__stderr__ or sys.stderr)  # type: ignore[assignment]


class CapturingReactor(Reactor):
    """A reactor whose readers and timers keep the task scope they were registered in."""

    def __init__(self, output: TaskOutput) -> None:
        self.output = output
        super().__init__()

    def add_reader(self, sock_or_fd: Any, callback: Callback) -> None:
        super().add_reader(sock_or_fd, self.output.bind(callback))

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return super().call_later(delay, self.output.bind(callback))

    def call_every(self, interval: float, callback: Callback, *, now: bool = False) -> Timer:
        return super().call_every(interval, self.output.bind(callback), now=now)


def read_logs(
    logs_dir: str,
    job_id: str,
    task_id: str | None,
    attempt: int | None,
    offsets: dict[str, int],
    limit: int,
) -> list[dict[str, Any]]:
    """The attempts' files of a job (or one task) with their bytes from ``offsets``.

    Each entry: ``task``, ``attempt``, ``size`` (of the current file), ``offset``
    (where ``data`` begins), ``data`` (at most ``limit`` bytes) and ``rotated``
    (an older ``.1`` file exists: what came before ``offset`` 0 of this one)."""
    job_dir = os.path.join(logs_dir, safe_name(job_id))
    try:
        names = sorted(os.listdir(job_dir))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        match = re.fullmatch(r"(.+)\.(\d+)\.log", name)
        if match is None:
            continue
        task, number = match.group(1), int(match.group(2))
        if (task_id is not None and task != safe_name(task_id)) or (
            attempt is not None and number != attempt
        ):
            continue
        path = os.path.join(job_dir, name)
        key = f"{task}.{number}"
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = offsets.get(key, 0)
            offset = 0 if offset > size else offset  # rotated since: start the new file
            fh.seek(offset)
            data = fh.read(limit)
        out.append(
            {
                "task": task,
                "attempt": number,
                "key": key,
                "size": size,
                "offset": offset,
                "data": data,
                "rotated": os.path.exists(path + ".1"),
            }
        )
    return out


__all__ = ["CapturingReactor", "TaskOutput", "TaskStream", "install", "log_path", "read_logs"]
