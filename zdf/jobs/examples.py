"""Small functions for function jobs, tests and the demo."""

from __future__ import annotations

import os
import time


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
