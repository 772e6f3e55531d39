"""The worker's side of short function tasks.

The worker connects a DEALER straight to the master (one hop fewer than going
through its executor), says ``fn_hello`` and then runs the batches the master
sends (``fn_run``). Tasks run in the worker's reactor in short slices, so a
burst of tiny tasks is answered in batches (``fn_done``) while the reactor still
serves the worker's other sockets between slices.
"""

from __future__ import annotations

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
from zdf.wire.payload import pack, unpack
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import make_socket

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.002
HELLO_TIMEOUT = 1.0
HELLO_RETRY = 0.2


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
    def __init__(self, reactor: Reactor, master_addr: str, executor_id: str, name: str) -> None:
        self.reactor = reactor
        self.master_addr = master_addr
        self.closed = False
        self.executor_id = executor_id
        self.name = name
        identity = f"{executor_id}/{name}/{os.getpid()}".encode()
        self.channel = Channel(
            reactor,
            make_socket(zmq.DEALER, connect=master_addr, identity=identity),
            {P.FN_RUN: self.on_run},
            name=f"fn-{name}",
        )
        self.queue: deque[tuple[int, str, list[Any]]] = deque()
        self.functions: dict[str, Any] = {}
        self._scheduled = False
        self.ran = 0
        self.hello()

    def hello(self) -> None:
        if self.closed:
            return
        body = {"executor_id": self.executor_id, "worker": self.name}
        self.channel.request(P.FN_HELLO, body, timeout=HELLO_TIMEOUT, callback=self._on_hello)

    def _on_hello(self, result: Any, error: ZdfError | None) -> None:
        if error is not None and not self.closed:
            self.reactor.call_later(HELLO_RETRY, self.hello)

    def close(self) -> None:
        self.closed = True
        self.channel.close()

    def on_run(self, call: Call) -> Any:
        body = P.fields(call.body, tasks=list)
        frames = call.frames
        offset = 0
        for key, fn, nframes in body["tasks"]:
            self.queue.append((key, fn, frames[offset : offset + nframes]))
            offset += nframes
        if not self._scheduled:
            self.run_slice()  # at once: a lone task should not wait a loop turn
        return None

    def run_slice(self) -> None:
        self._scheduled = False
        deadline = time.perf_counter() + SLICE_SECONDS
        header: list[list[Any]] = []
        out: list[Any] = []
        while self.queue:
            key, path, frames = self.queue.popleft()
            ok, result = self._run_one(path, frames)
            header.append([key, ok, len(result)])
            out.extend(result)
            if time.perf_counter() > deadline:
                break
        if header:
            self.ran += len(header)
            self.channel.notify(P.FN_DONE, {"results": header}, frames=out)
        if self.queue and not self._scheduled:
            self._scheduled = True
            self.reactor.call_later(0, self.run_slice)

    def _run_one(self, path: str, frames: list[Any]) -> tuple[bool, list[Any]]:
        try:
            fn = resolve_function(path, self.functions)
            args, kwargs = unpack(frames)
            value = fn(*args, **kwargs)
            return True, pack(value)
        except Exception as exc:
            return False, pack(describe_exception(exc))
