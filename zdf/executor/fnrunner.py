"""The worker's side of short function tasks.

The worker connects a DEALER straight to the master (one hop fewer than going
through its executor), says ``fn_hello`` and then runs the batches the master
sends (``fn_run``). Tasks run in the worker's reactor in short slices, so a
burst of tiny tasks is answered in batches while the reactor still serves the
worker's other sockets between slices.

Each slice's results go straight to their clients' result addresses (a PUSH
per client, made on first use and closed when idle), and ``fn_done`` tells the
master which tasks are finished, without their values. That report is not on
any client's path, so it waits a little (``DONE_DELAY``) to gather the tasks
that finish meanwhile, unless half of the master's window for this worker is
used up: a client that runs one task after another then costs the master and
the worker a third fewer messages. A task whose client gave no address has its
value in ``fn_done``, sent at once, and the master forwards it.

Pickled functions run only when this executor's ``allow-pickle`` is set;
otherwise the task fails with a ``PermissionError``.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
import traceback
from collections import deque
from typing import Any

import zmq

from zdf import protocol as P
from zdf.errors import ZdfError
from zdf.master.fnqueue import DEFAULT_WINDOW
from zdf.wire.codec import Kind, encode
from zdf.wire.payload import pack, unpack
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import close_socket, make_socket

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.002
HELLO_TIMEOUT = 1.0
HELLO_RETRY = 0.2
DONE_DELAY = 0.002  # how long a completion report may wait to gather others
REPLY_IDLE_CLOSE = 60.0  # a client's result socket unused this long is closed
MAX_PICKLED_CACHE = 256

Task = tuple[int, str, list[Any], str, int]  # key, fn, frames, reply address, client task id


def resolve_function(path: str, cache: dict[str, Any]) -> Any:
    fn = cache.get(path)
    if fn is None:
        module_name, _, qualname = path.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        fn = cache[path] = obj
    return fn


def describe_exception(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


class FunctionRunner:
    def __init__(
        self,
        reactor: Reactor,
        master_addr: str,
        executor_id: str,
        name: str,
        allow_pickle: bool = False,
    ) -> None:
        self.reactor = reactor
        self.master_addr = master_addr
        self.closed = False
        self.executor_id = executor_id
        self.name = name
        self.allow_pickle = allow_pickle
        identity = f"{executor_id}/{name}/{os.getpid()}".encode()
        self.channel = Channel(
            reactor,
            make_socket(zmq.DEALER, connect=master_addr, identity=identity),
            {P.FN_RUN: self.on_run},
            name=f"fn-{name}",
        )
        self.queue: deque[Task] = deque()
        self.functions: dict[str, Any] = {}
        self.replies: dict[str, tuple[zmq.Socket[bytes], float]] = {}  # addr: (PUSH, last use)
        self.window = DEFAULT_WINDOW  # the master's prefetch window for this worker
        self._unreported: list[list[Any]] = []  # fn_done entries not sent yet
        self._report_timer: Timer | None = None
        self._scheduled = False
        self.ran = 0
        self._idle_timer = reactor.call_every(REPLY_IDLE_CLOSE / 2, self._close_idle_replies)
        self.hello()

    def hello(self) -> None:
        if self.closed:
            return
        body = {"executor_id": self.executor_id, "worker": self.name}
        self.channel.request(P.FN_HELLO, body, timeout=HELLO_TIMEOUT, callback=self._on_hello)

    def _on_hello(self, result: Any, error: ZdfError | None) -> None:
        if error is not None and not self.closed:
            self.reactor.call_later(HELLO_RETRY, self.hello)
        elif isinstance(result, dict) and isinstance(result.get("window"), int):
            self.window = max(1, result["window"])

    def close(self) -> None:
        self.closed = True
        self._idle_timer.cancel()
        if self._report_timer is not None:
            self._report_timer.cancel()
        self.channel.close()
        for sock, _ in self.replies.values():
            close_socket(sock)
        self.replies.clear()

    def on_run(self, call: Call) -> Any:
        body = P.fields(call.body, tasks=list)
        frames = call.frames
        offset = 0
        for key, fn, nframes, reply, tid in body["tasks"]:
            self.queue.append((key, fn, frames[offset : offset + nframes], reply, tid))
            offset += nframes
        if not self._scheduled:
            self.run_slice()  # at once: a lone task should not wait a loop turn
        return None

    def run_slice(self) -> None:
        self._scheduled = False
        deadline = time.perf_counter() + SLICE_SECONDS
        done: list[list[Any]] = []  # fn_done entries for the master
        via_master: list[Any] = []  # values of tasks whose client gave no address
        direct: dict[str, tuple[list[list[Any]], list[Any]]] = {}
        while self.queue:
            key, path, frames, reply, tid = self.queue.popleft()
            ok, result = self._run_one(path, frames)
            if reply:
                header, out = direct.get(reply) or direct.setdefault(reply, ([], []))
                header.append([tid, ok, len(result)])
                out.extend(result)
                done.append([key, ok, 0])
            else:
                done.append([key, ok, len(result)])
                via_master.extend(result)
            if time.perf_counter() > deadline:
                break
        for reply, (header, out) in direct.items():
            self._send_direct(reply, header, out)
        self.ran += len(done)
        self._unreported += done
        if via_master or len(self._unreported) + len(self.queue) >= self.window // 2:
            self._report(via_master)
        elif self._unreported and self._report_timer is None:
            self._report_timer = self.reactor.call_later(DONE_DELAY, self._report)
        if self.queue and not self._scheduled:
            self._scheduled = True
            self.reactor.call_later(0, self.run_slice)

    def _report(self, frames: list[Any] | None = None) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if self._unreported and not self.closed:
            done, self._unreported = self._unreported, []
            self.channel.notify(P.FN_DONE, {"results": done}, frames=frames or [])

    def _send_direct(self, reply: str, header: list[list[Any]], frames: list[Any]) -> None:
        """``reply`` is ``endpoint#token``: the token proves to the client that the
        result comes from a worker the master gave its task to."""
        addr, _, token = reply.partition("#")
        entry = self.replies.get(addr)
        # Unbounded queue: a client never has more results due than its own
        # max_inflight, and a result must not be dropped.
        sock = entry[0] if entry is not None else make_socket(zmq.PUSH, connect=addr, sndhwm=0)
        self.replies[addr] = (sock, time.monotonic())
        body = {"results": header, "token": token}
        sock.send_multipart([encode(Kind.EVENT, P.FN_RESULT, 0, body), *frames], copy=False)

    def _close_idle_replies(self) -> None:
        now = time.monotonic()
        for reply, (sock, last_used) in list(self.replies.items()):
            if now - last_used > REPLY_IDLE_CLOSE:
                close_socket(sock)
                del self.replies[reply]

    def _run_one(self, path: str, frames: list[Any]) -> tuple[bool, list[Any]]:
        try:
            if path == P.PICKLED_FN:
                fn = self._unpickle(frames[0])
                frames = frames[1:]
            else:
                fn = resolve_function(path, self.functions)
            args, kwargs = unpack(frames)
            value = fn(*args, **kwargs)
            return True, pack(value)
        except Exception as exc:
            return False, pack(describe_exception(exc))

    def _unpickle(self, frame: Any) -> Any:
        if not self.allow_pickle:
            raise PermissionError(
                f"executor {self.executor_id} does not accept pickled functions "
                "(its allow-pickle is false)"
            )
        data = frame.bytes if hasattr(frame, "bytes") else bytes(frame)
        digest = "!" + hashlib.blake2b(data, digest_size=16).hexdigest()
        fn = self.functions.get(digest)
        if fn is None:
            import cloudpickle  # only where pickles are allowed

            if len(self.functions) > MAX_PICKLED_CACHE:
                self.functions = {k: v for k, v in self.functions.items() if k[0] != "!"}
            fn = self.functions[digest] = cloudpickle.loads(data)
        return fn
