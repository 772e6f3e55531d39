"""The operator API: what a user subclasses to run code as a task of a job.

An operator is referenced from a job spec by import path (``"pkg.mod:Class"``)
and built by ``zdf.runtime.launch`` with the task's ``TaskContext``. Its life:

1. ``restore(state)`` — only when the host has a checkpoint (a restarted task);
2. ``open()`` — create ports and links, start timers; never block;
3. callbacks from the reactor (batches, credits, control messages, timers);
4. ``finish(summary)`` or ``fail(error)`` — reported once to the host;
5. ``close()`` — right after the report of either, or by the host
   (``TaskHandle.cancel``) to stop the task; closes every socket and timer the
   operator made through the helpers below and runs every ``on_close`` closer
   (a sink's file and its lock). A finished task holds nothing: the same job run
   again on the same workers finds its files unlocked. Its sockets are closed
   with ``FINISH_LINGER`` (``linger``), so that what it sent last (an
   end-of-stream ack, say) still reaches its peer; a canceled or failed task's
   are dropped at once.

``snapshot()`` returns the positions the operator needs to resume exactly (in
the benchmark job: a binlog's marks, a producer's pace, a sink's file length with
its per-table gtids); ``checkpoint()`` hands it to the host.

Done flags: ``mark_done()`` publishes the endpoint ``done`` and ``when_done(ids,
fn)`` calls ``fn`` once every named task has published it. The endpoint
directory is durable (the master keeps it in the metastore and hands it to every
task it starts), so "my downstream will never need me again" survives any
restart: a stage finishes when its downstream is done, never earlier, and a
restarted stage whose downstream is already done finishes at once.

Resources made through ``out_port``, ``in_port``, ``link``, ``call_later`` and
``call_every`` are tracked and closed by ``close()``, and their callbacks are
guarded: an exception in one fails the task (with the traceback) instead of
being swallowed by the reactor, so a bug shows up as a failed task, not a hang.

``defer(fn)`` runs ``fn`` once when the current burst of callbacks is over (a
socket drained, a timer done): that is how output and acks are coalesced. It
runs inside the same wake-up rather than on a zero-delay timer, so coalescing
never costs an extra turn of the reactor (nor a poll) on the hot path.

For the common one-input, one-output shape see ``zdf.runtime.stream.StreamOperator``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

import numpy as np
import zmq

from zdf.records import RECORD_DTYPE
from zdf.runtime import hubaddr
from zdf.runtime.context import TaskContext
from zdf.runtime.link import PeerLink
from zdf.runtime.pipe import DEFAULT_WINDOW, BatchCallback, InPort, OutPort
from zdf.wire.reactor import Timer
from zdf.wire.rpc import Handler

P = ParamSpec("P")

IPC_PATH_MAX = getattr(zmq, "IPC_PATH_MAX_LEN", 0) or 107
"""The longest Unix socket path (sockaddr_un.sun_path, less its terminating NUL)."""

CHECKPOINT_RETRY = 1.0
"""Seconds to wait for a checkpoint to be confirmed before saving it again."""

FINISH_LINGER = 1.0
"""Seconds a finished task's closed sockets keep trying to deliver what is queued on them."""

DONE = "done"
"""The endpoint name of a task's done flag (``Operator.mark_done``)."""


def _ignore_addr(fn: Callable[[str], None], task_id: str, addr: str) -> None:
    fn(task_id)


class Operator:
    """Base class of every task's code (see the module docstring)."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.params: dict[str, Any] = dict(ctx.params)
        self.log = logging.getLogger(f"zdf.task.{ctx.task_id}")
        self.done = False  # finished or failed: reported to the host
        self.closed = False
        # Seconds the sockets closed by close() keep delivering: FINISH_LINGER once finished.
        self.linger = 0.0
        self._closers: list[Callable[[], None]] = []
        self._timers: set[Timer] = set()
        self._depth = 0  # nesting of guarded callbacks on the stack
        self._deferred: dict[Callable[[], None], None] = {}  # an ordered set

    # -- the life cycle (override) -------------------------------------------
    def open(self) -> None:
        """Create ports and links and start; must not block."""

    def close(self) -> None:
        """Release everything; idempotent. Subclasses extend and call super()."""
        if self.closed:
            return
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:
                self.log.exception("closing a resource failed")

    def snapshot(self) -> dict[str, Any]:
        """The state to resume from after a restart (msgpack-able)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Called before ``open()`` with the last checkpoint, if any."""

    # -- reporting -----------------------------------------------------------
    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Report the task finished and release everything it holds.

        Only call it when nothing will ask this task for anything again (by the
        done-flag rule of the module docstring): its ports and links close here."""
        if self.done:
            return
        self.done = True
        self.linger = FINISH_LINGER  # also when the host closes us from inside the report
        self.ctx.report_finished(dict(summary or {}))
        self.close()

    def fail(self, error: str | BaseException) -> None:
        if self.done:
            return
        self.done = True
        if isinstance(error, BaseException):
            text = "".join(traceback.format_exception(error)).rstrip()
            error = f"{type(error).__name__}: {error}\n{text}"
        self.log.error("task failed: %s", error.splitlines()[0] if error else "")
        self.ctx.report_failed(error)
        self.close()

    def progress(self, **counters: float) -> None:
        self.ctx.report_progress(counters)

    def checkpoint(
        self,
        on_saved: Callable[[], None] | None = None,
        *,
        state: dict[str, Any] | None = None,
        retry: float = CHECKPOINT_RETRY,
    ) -> None:
        """Save ``state`` (default: ``snapshot()``); ``on_saved`` runs once, when durable.

        A save can vanish without an answer (a master failover, a timeout): until one
        is confirmed, the state is saved again every ``retry`` seconds, so that an
        operator waiting on ``on_saved`` is never stuck. A refusal (a zombie) stops
        the task through its host instead."""
        saved = False
        timer: Timer | None = None

        def confirmed() -> None:
            nonlocal saved
            if saved:
                return
            saved = True
            if timer is not None:
                timer.cancel()
            if on_saved is not None:
                on_saved()

        def attempt() -> None:
            nonlocal timer
            if saved:
                return
            timer = self.call_later(retry, attempt)
            self.ctx.save_checkpoint(self.snapshot() if state is None else state, confirmed)

        attempt()

    # -- helpers that track what they make -----------------------------------
    def guard(self, fn: Callable[P, None]) -> Callable[P, None]:
        """Wrap a callback: after close it does nothing; an exception fails the task;
        deferred work runs when the outermost guarded callback returns. (Not
        ``functools.wraps``: copying a partial's attributes cost a 1,000-table binlog's
        open a fifth of a second, and nothing reads them.)"""

        def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
            if self.closed:
                return
            self._depth += 1
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                self.fail(exc)
            finally:
                self._depth -= 1
            if self._depth == 0 and self._deferred:
                self._run_deferred()

        return guarded

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once at the end of the current burst (now, outside any callback)."""
        if self._depth == 0:
            fn()
        else:
            self._deferred[fn] = None

    def _run_deferred(self) -> None:
        self._depth += 1
        try:
            while self._deferred and not self.closed:
                fn = next(iter(self._deferred))
                del self._deferred[fn]
                fn()
        except Exception as exc:
            self.fail(exc)
        finally:
            self._depth -= 1

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def data_address(self, name: str) -> str:
        """Where to bind a data socket: ipc:// when the host offers a directory, else tcp."""
        if self.ctx.ipc_dir:
            key = f"{self.ctx.job_id}/{self.ctx.task_id}/{self.ctx.attempt}/{name}/{os.getpid()}"
            digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
            path = f"{os.path.join(self.ctx.ipc_dir, digest)}.sock"
            if len(path.encode()) <= IPC_PATH_MAX:  # else a deep directory: tcp instead
                return f"ipc://{path}"
        return f"tcp://{self.ctx.host}:*"

    def hub_address(self) -> str:
        """Where this process's shared data socket binds (``zdf.runtime.hub``): the
        directory ``data_address`` would put a socket file in, or its tcp address, with
        an ipc:// twin for the peers on this host where the host offers a directory
        (``zdf.runtime.hubaddr``)."""
        addr = self.data_address("hub")  # a hub's file name is as long as this one's
        if addr.startswith("ipc://"):
            return f"ipc://{os.path.dirname(addr[len('ipc://') :])}/"
        twin_dir = self.ctx.same_host_dir
        if twin_dir and len(os.path.join(twin_dir, "f" * 16 + ".sock").encode()) <= IPC_PATH_MAX:
            return hubaddr.twin_spec(addr, twin_dir)
        return addr

    def out_port(
        self,
        name: str,
        channels: int,
        *,
        on_credit: Callable[[int], None],
        on_subscribe: Callable[[int, int], None] | None = None,
        on_eos_acked: Callable[[int], None] | None = None,
    ) -> OutPort:
        """Open a sending port (on this process's shared socket) and publish it as ``name``."""
        port = OutPort(
            self.ctx.reactor,
            self.hub_address(),
            channels,
            on_credit=self.guard(on_credit),
            on_subscribe=None if on_subscribe is None else self.guard(on_subscribe),
            on_eos_acked=None if on_eos_acked is None else self.guard(on_eos_acked),
            name=f"{self.ctx.task_id}.{name}",
            wrap=self.guard,
        )
        self.on_close(lambda: port.close(self.linger))
        self.ctx.publish_endpoint(name, port.addr)
        return port

    def in_port(
        self,
        task_id: str,
        name: str,
        channel: int,
        *,
        on_batch: BatchCallback,
        on_eos: Callable[[int], None],
        start: int = 0,
        window: int = DEFAULT_WINDOW,
        dtype: np.dtype[Any] = RECORD_DTYPE,
        resume: Callable[[], int] | None = None,
        active: bool = True,
    ) -> InPort:
        """Subscribe to channel ``channel`` of ``task_id``'s port ``name``, from ``start``.

        Subscriptions carry this task's attempt, so a zombie of an earlier attempt
        cannot take the channel back (see ``zdf.runtime.pipe``)."""
        port = InPort(
            self.ctx.reactor,
            channel,
            on_batch=self.guard(on_batch),
            on_eos=self.guard(on_eos),
            start=start,
            window=window,
            dtype=dtype,
            name=f"{self.ctx.task_id}<-{task_id}.{name}[{channel}]",
            wrap=self.guard,
            defer=self.defer,
            attempt=self.ctx.attempt,
            resume=resume,
            active=active,
        )
        self.on_close(lambda: port.close(self.linger))
        self.ctx.resolve_endpoint(task_id, name, self.guard(port.connect))
        return port

    def link(
        self,
        task_id: str,
        name: str,
        handlers: Mapping[str, Handler],
        *,
        on_connect: Callable[[PeerLink], None] | None = None,
    ) -> PeerLink:
        """A control link to ``task_id``'s ROUTER published as ``name``."""
        guarded: dict[str, Handler] = {op: self.guard_handler(h) for op, h in handlers.items()}
        link = PeerLink(
            self.ctx.reactor,
            guarded,
            on_connect=None if on_connect is None else self.guard(on_connect),
            name=f"{self.ctx.task_id}->{task_id}.{name}",
            wrap=self.guard,
        )
        self.on_close(lambda: link.close(self.linger))
        self.ctx.resolve_endpoint(task_id, name, self.guard(link.connect))
        return link

    # -- done flags ------------------------------------------------------------
    def mark_done(self) -> None:
        """Tell the job (durably, through the endpoint directory) this task is done."""
        self.ctx.publish_endpoint(DONE, str(self.ctx.attempt))

    def when_done(self, task_ids: list[str], callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when every task of ``task_ids`` has called ``mark_done``."""
        waiting = set(task_ids)
        fired = False

        def seen(task_id: str) -> None:
            nonlocal fired
            waiting.discard(task_id)
            if not waiting and not fired:
                fired = True
                callback()

        if not waiting:
            self.call_later(0.0, callback)
        for task_id in task_ids:
            self.ctx.resolve_endpoint(
                task_id, DONE, self.guard(functools.partial(_ignore_addr, seen, task_id))
            )

    def done_after(self) -> list[str] | None:
        """The tasks (param ``done-after``) whose done flags end this one, if it has any."""
        ids = self.params.get("done-after")
        return [str(t) for t in ids] if isinstance(ids, list) else None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        guarded = self.guard(callback)

        def fire() -> None:
            self._timers.discard(timer)
            guarded()

        timer = self.ctx.reactor.call_later(delay, fire)
        self._timers.add(timer)
        return timer

    def call_every(self, interval: float, callback: Callable[[], None]) -> Timer:
        timer = self.ctx.reactor.call_every(interval, self.guard(callback))
        self._timers.add(timer)
        return timer

    def guard_handler(self, handler: Handler) -> Handler:
        """``guard`` for an RPC handler (which returns its reply)."""

        def guarded(call: Any) -> Any:
            if self.closed:
                return None
            self._depth += 1
            try:
                return handler(call)
            except Exception as exc:
                self.fail(exc)
                return None
            finally:
                self._depth -= 1
                if self._depth == 0 and self._deferred:
                    self._run_deferred()

        return guarded
