"""Small functions for function jobs, tests and the demo."""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def spin(seconds: float = 0.1) -> dict[str, float | int]:
    """Keep a CPU busy for ``seconds`` (a stand-in for real work)."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return {"iterations": n, "pid": os.getpid()}


def hold(seconds: float = 60.0) -> float:
    """Block for ``seconds``: a task that stays running, for cancel and failover tests."""
    time.sleep(seconds)
    return seconds


def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def noop() -> None:
    return None


def hold_once(marker: str, seconds: float = 60.0) -> str:
    """The first call writes its pid to ``marker`` and blocks; a retry returns at once.

    For tests that kill the process running a task and expect it retried elsewhere.
    """
    if os.path.exists(marker):
        return "retried"
    with open(marker, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "first"


class CustomError(Exception):
    pass


def raise_custom(message: str) -> None:
    raise CustomError(message)


def total(array: Any) -> Any:
    """Sum of a numpy array, and the array doubled (arrays travel both ways)."""
    return {"sum": float(array.sum()), "doubled": array * 2}


def chatty(lines: int = 3, fail: bool = False) -> int:
    """Print ``lines`` lines to stdout and one to stderr, then raise if ``fail``: a task
    whose output ``zdf logs`` shows."""
    for i in range(lines):
        print(f"line {i + 1} of {lines}")
    print("a word on stderr", file=sys.stderr)
    if fail:
        raise RuntimeError(f"chatty failed after {lines} lines")
    return lines


def log(message: str, level: str = "warning") -> str:
    """Log ``message`` at ``level`` on the logger ``zdf.examples``: a function task
    whose log record its client sees (``log_to_driver``)."""
    import logging

    logging.getLogger("zdf.examples").log(logging.getLevelName(level.upper()), message)
    return message


def wait_for(marker: str, seconds: float = 30.0) -> bool:
    """Print a line, then wait up to ``seconds`` for the file ``marker`` to exist: a
    task whose client sees its output while it still runs."""
    print(f"waiting for {marker}", flush=True)
    deadline = time.monotonic() + seconds
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(marker)


# -- task graphs (tests, README, bench) ----------------------------------------


def add(a: Any, b: Any) -> Any:
    return a + b


def mul(a: Any, b: Any) -> Any:
    return a * b


def pid_of(*inputs: Any) -> int:
    """The pid of the worker running it (where a task with these inputs was placed)."""
    return os.getpid()


def kib(n: int) -> bytes:
    """``n`` KiB of bytes: a result that holds memory on its worker."""
    return bytes(n * 1024)


def length(value: Any, *after: Any) -> int:
    """``len(value)`` (``after``: inputs it only waits for)."""
    return len(value)


def ones(n: int) -> Any:
    import numpy as np

    return np.ones(n)


def block(seed: int, nbytes: int = 1 << 20) -> Any:
    """``nbytes`` of int64s counting up from ``seed``: a result unlike any other."""
    import numpy as np

    return np.arange(seed, seed + nbytes // 8, dtype=np.int64)


def store_info() -> dict[str, int]:
    """This worker's object store: how many values, how many bytes, and its pid."""
    from zdf.executor.objstore import current_store

    store = current_store()
    if store is None:
        return {"values": 0, "bytes": 0, "pid": os.getpid()}
    return {"values": len(store), "bytes": store.memory_bytes, "pid": os.getpid()}


def echo(value: Any) -> Any:
    """Its argument back (a value's round trip: client -> worker -> client)."""
    return value


def fetch_counts(*inputs: Any) -> dict[str, int]:
    """How this worker fetched its inputs so far (``inputs``: taken, then ignored):
    values fetched, of them from shared memory, and handoffs fallen back."""
    from zdf.executor.objtransfer import fetch_counts as counts

    return {**counts(), "pid": os.getpid()}
