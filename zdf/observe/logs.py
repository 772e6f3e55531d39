"""Every process's log lines: text or JSON, naming the process and the task, rate-limited.

Theory of operation: ``configure_logging`` gives the root logger one handler (a
file or standard error) with a formatter for ``log-format`` and a ``RateLimit``
filter. Every line names its process (``master[master-1]``,
``worker[exec-1/w0]``...); a line about a task names its job, task and attempt,
given by the call site as ``extra=task_fields(job, task, attempt)`` (so they are
fields of the JSON object, and ``[job/task#attempt]`` in text). Warnings and
errors that repeat (the same logger and message template, whatever the
arguments) are let through once per ``interval``; the next one after a quiet
spell says how many were held back, so an outage is one line a few seconds
rather than one per task per heartbeat.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from zdf.errors import ConfigError

RATE_LIMIT_INTERVAL = 5.0
"""Seconds between two lines of one repeated warning."""
TASK_FIELDS = ("job", "task", "attempt")


def task_fields(
    job: str | None, task: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """``extra=`` for a log call about a task: its fields in every format."""
    return {k: v for k, v in zip(TASK_FIELDS, (job, task, attempt), strict=True) if v is not None}


class RateLimit(logging.Filter):
    """Let one warning of each kind through per ``interval``; count the others."""

    def __init__(
        self, interval: float = RATE_LIMIT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            record.suppressed = held
        return True


def _task_label(record: logging.LogRecord) -> str:
    job, task, attempt = (getattr(record, f, None) for f in TASK_FIELDS)
    if job is None:
        return ""
    label = str(job) if task is None else f"{job}/{task}"
    return f" [{label}#{attempt}]" if attempt is not None else f" [{label}]"


class TextFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s%(task_label)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.task_label = _task_label(record)
        line = super().format(record)
        held = getattr(record, "suppressed", 0)
        return f"{line} ({held} more like this held back)" if held else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, process, logger, msg, and job/task/attempt."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self.process,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        held = getattr(record, "suppressed", 0)
        if held:
            doc["suppressed"] = held
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    level: str, log_file: str = "", process: str = "zdf", fmt: str = "text"
) -> None:
    try:
        handler: logging.Handler = (
            logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
        )
    except OSError as exc:
        raise ConfigError(f"key 'log-file': cannot open {log_file}: {exc.strerror}") from None
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else TextFormatter(process))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
