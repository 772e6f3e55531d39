"""A function task's output, forwarded to the client that submitted it (Ray's ``log_to_driver``).

Theory of operation. A client that wants its tasks' output (the default;
``zdf.connect(..., log_to_driver=False)`` turns it off) ends the token of its
result address with ``+out`` (``endpoint#token+out``). The address travels with
each task, through the master or past it under a lease, so the worker needs no
other word: it opens the worker's ``FunctionOutput`` around such a task. While
it is open, what the task writes to ``sys.stdout``/``sys.stderr``
(``ForwardingStream``, installed over the worker's streams) and the log records
it emits (``ForwardHandler`` on the root logger) are gathered into lines, on the
worker's own thread only (a thread the task started writes to the worker's
streams as before). Forwarding is a copy: the text also goes where it went
before (the executor's terminal or log file).

Lines leave as ``fn_output`` events on the PUSH socket the task's result takes
(``fnrunner._send_to_client``), so they reach the client before the result.
Each whole line leaves at once, up to ``SENDS_PER_INTERVAL`` messages in a
``FLUSH_INTERVAL``; beyond that (a burst) lines are gathered and leave with a
later write once the interval is over, at ``FLUSH_CHARS``, or when the task
ends. The task runs on the worker's only thread, so nothing can send for it
meanwhile: the tail of a burst followed by a long computation shows up at the
end of the task.

Bounds, so that a chatty task cannot flood its client or the network: a task
forwards at most ``MAX_TASK_CHARS`` characters; a worker forwards ``RATE``
characters a second on average with bursts of ``BURST`` (a token bucket); a
line is cut at ``MAX_LINE``. A bucket that runs dry lets nothing through until
it is half full again, so that what arrives comes in whole stretches, with one
line where a stretch is missing ("[zdf: N characters not forwarded here]")
rather than one line in a hundred. What is held back is counted, and the
task's last message says how much in all, for the client to print once.

The client's side is ``OutputPrinter``: each line goes to the client's own
stdout or stderr as ``(square pid=4242, exec-1/w0) text``, as Ray prints
``(square pid=4242, ip=...)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from zdf.errors import ProtocolError

OUTPUT_MARK = "+out"
"""Ends the token of a client's result address when it wants its tasks' output."""
STDOUT, STDERR = 0, 1
FLUSH_INTERVAL = 0.1  # seconds: at most SENDS_PER_INTERVAL messages in one of these
SENDS_PER_INTERVAL = 10  # ... beyond which lines are gathered
FLUSH_CHARS = 16 << 10  # gathered lines sent at once from this size
MAX_LINE = 4096  # characters of one line forwarded (the rest is cut)
MAX_TASK_CHARS = 1 << 20  # characters one task forwards (as a task's output file keeps)
RATE = 64 << 10  # characters a second one worker forwards, on average
BURST = 256 << 10  # ... and at once, after a quiet spell
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

Send = Callable[[dict[str, Any]], None]


def wants_output(reply: str) -> bool:
    """Whether the client at ``reply`` (``endpoint#token``) asked for its tasks' output."""
    return reply.endswith(OUTPUT_MARK)


def function_label(path: str) -> str:
    """What the client's lines name a task by: the function's name."""
    return path.rpartition(":")[2].rpartition(".")[2] if ":" in path else "function"


class FunctionOutput:
    """The worker's side: the output of the function task running now, bounded."""

    def __init__(
        self,
        worker: str,
        *,
        max_task_chars: int = MAX_TASK_CHARS,
        rate: float = RATE,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker = worker
        self.pid = os.getpid()
        self.max_task_chars = max_task_chars
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.thread = threading.get_ident()  # the worker's reactor thread
        self._send: Send | None = None
        self._tid, self._path, self._label = 0, "", ""
        self._written = False  # the open task wrote something
        self._lines: list[list[Any]] = []
        self._partial = ["", ""]  # an unfinished line per stream
        self._pending = 0  # characters in ``_lines``
        self._task_chars = 0
        self._dropped = 0
        self._tokens = burst
        self._refilled = clock()
        self._dry = False  # the bucket ran dry: nothing passes until it is half full
        self._gap = 0  # characters held back since the last line that passed
        self._interval_began = 0.0
        self._sends = 0  # messages sent since ``_interval_began``
        self._sending = False  # a send that writes or logs must not loop back

    @property
    def open(self) -> bool:
        return self._send is not None and threading.get_ident() == self.thread

    def begin(self, send: Send, tid: int, path: str) -> None:
        """Forward what the task ``tid`` of function ``path`` writes to ``send`` until
        ``end``. Cheap: a task that writes nothing costs two assignments more."""
        self._send = send
        self._tid, self._path = tid, path
        self._label = ""
        self._written = False

    def relabel(self, fn: Any) -> None:
        """Name the open task by ``fn`` (a function that came pickled has no path)."""
        if self._send is not None:
            self._label = getattr(fn, "__name__", None) or type(fn).__name__

    def end(self) -> None:
        if self._written:
            for stream, rest in enumerate(self._partial):
                if rest:
                    self._add(stream, rest)
            self._flush(last=True)
            self._partial = ["", ""]
            self._task_chars = self._dropped = self._gap = 0
        self._send = None

    @contextmanager
    def forwarding(self, send: Send, tid: int, path: str) -> Iterator[None]:
        """``begin`` ... ``end`` around a block."""
        self.begin(send, tid, path)
        try:
            yield
        finally:
            self.end()

    def write(self, stream: int, text: str) -> None:
        if not self.open or self._sending or not isinstance(text, str):
            return
        self._written = True
        pieces = (self._partial[stream] + text).split("\n")
        self._partial[stream] = ""
        rest = pieces.pop()
        for line in pieces:
            self._add(stream, line)
        if len(rest) >= MAX_LINE:
            self._add(stream, rest)
        else:
            self._partial[stream] = rest
        if not self._lines:
            return
        now = self.clock()
        if now - self._interval_began >= FLUSH_INTERVAL:
            self._interval_began, self._sends = now, 0
        if self._sends < SENDS_PER_INTERVAL or self._pending >= FLUSH_CHARS:
            self._flush()

    def _add(self, stream: int, line: str) -> None:
        if len(line) > MAX_LINE:
            self._dropped += len(line) - MAX_LINE
            line = line[:MAX_LINE] + " [cut]"
        size = len(line) + 1
        if self._task_chars + size > self.max_task_chars:
            self._dropped += size  # the rest of the task: said once, at its end
            return
        if not self._take(size):
            self._dropped += size
            self._gap += size
            return
        if self._gap:
            self._lines.append([stream, f"[zdf: {self._gap} characters not forwarded here]"])
            self._gap = 0
        self._task_chars += size
        self._pending += size
        self._lines.append([stream, line])

    def _take(self, size: int) -> bool:
        """A token bucket of characters, per worker; once dry, shut until half full."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._dry and self._tokens < self.burst / 2:
            return False
        self._dry = self._tokens < size
        if self._dry:
            return False
        self._tokens -= size
        return True

    def _flush(self, last: bool = False) -> None:
        send = self._send
        if send is None or not (self._lines or (last and self._dropped)):
            return
        body = {
            "tid": self._tid,
            "fn": self._label or function_label(self._path),
            "worker": self.worker,
            "pid": self.pid,
            "lines": self._lines,
        }
        if last and self._dropped:
            body["dropped"] = self._dropped
        self._lines, self._pending = [], 0
        self._sends += 1
        self._sending = True
        try:
            send(body)
        finally:
            self._sending = False


class ForwardingStream:
    """A worker's ``sys.stdout``/``sys.stderr``: a copy to the open task's client."""

    def __init__(self, output: FunctionOutput, stream: int, inner: IO[str]) -> None:
        self.output = output
        self.stream = stream
        self.inner = inner

    def write(self, text: str) -> int:
        if self.output._send is not None:  # cheap when no task forwards
            self.output.write(self.stream, text)
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ForwardHandler(logging.Handler):
    """Log records emitted by the open task, to its client (as its stderr)."""

    def __init__(self, output: FunctionOutput) -> None:
        super().__init__()
        self.output = output
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if self.output.open:
            try:
                self.output.write(STDERR, self.format(record) + "\n")
            except Exception:  # a record that does not format: as logging does
                self.handleError(record)


def install(output: FunctionOutput) -> None:
    """Forward this worker's ``print()``, writes to stderr and log records while a
    function task that asked runs (over whatever routes them now)."""
    sys.stdout = ForwardingStream(output, STDOUT, sys.stdout)  # type: ignore[assignment]
    sys.stderr = ForwardingStream(output, STDERR, sys.stderr)  # type: ignore[assignment]
    logging.getLogger().addHandler(ForwardHandler(output))


class OutputPrinter:
    """The client's side: prints each forwarded line with its task's prefix."""

    def __init__(
        self,
        stdout: Callable[[], IO[str]] | None = None,
        stderr: Callable[[], IO[str]] | None = None,
    ) -> None:
        # Looked up at each print: the streams may be replaced (pytest's capture, a notebook).
        self.streams = (stdout or (lambda: sys.stdout), stderr or (lambda: sys.stderr))

    def __call__(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("lines"), list):
            raise ProtocolError("fn_output: lines missing")
        prefix = f"({body.get('fn')} pid={body.get('pid')}, {body.get('worker')})"
        runs: list[tuple[int, list[str]]] = []  # in order; a run of lines per stream
        for entry in body["lines"]:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in (STDOUT, STDERR)):
                raise ProtocolError("fn_output: a line is not [stream, text]")
            if not runs or runs[-1][0] != entry[0]:
                runs.append((entry[0], []))
            runs[-1][1].append(f"{prefix} {entry[1]}\n")
        dropped = body.get("dropped")
        if isinstance(dropped, int) and dropped > 0:
            note = (
                f"{prefix} [zdf: {dropped} characters of this task's output not forwarded "
                "(size or rate limit); all of it went to its executor's output]\n"
            )
            runs.append((STDERR, [note]))
        for stream, lines in runs:
            fh = self.streams[stream]()
            fh.write("".join(lines))
            fh.flush()


__all__ = [
    "OUTPUT_MARK",
    "ForwardHandler",
    "ForwardingStream",
    "FunctionOutput",
    "OutputPrinter",
    "install",
    "wants_output",
]
