"""A linearizability checker for per-key register histories (Wing & Gong, Lowe).

Every operation is recorded with its invocation and return times: a ``put``
of a value written nowhere else, or a ``get`` and the value it saw (None for a
missing key). An operation whose outcome is unknown (a write that timed out)
has no return: it may take effect at any time after its invocation, or never.
Timed-out reads tell nothing and are left out by the recorder.

The search linearizes one operation at a time, choosing among those invoked
before the earliest pending return (Lowe's just-in-time linearization), and
memoizes (set of linearized operations, register value) so each configuration
is explored once. Histories are checked per key (P-compositionality). The time
budget makes the answer "unknown" instead of hanging.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["ok", "violation", "unknown"]


@dataclass(frozen=True, slots=True)
class Op:
    client: int
    kind: Literal["put", "get"]
    key: str
    value: bytes | None
    """The value written (put) or read (get; None: the key was missing)."""
    invoke: float
    ret: float = math.inf
    """math.inf: the outcome is unknown (a write that timed out)."""


class _Budget(Exception):
    pass


def check_key(ops: list[Op], deadline: float) -> Verdict:
    ops = sorted(ops, key=lambda o: o.invoke)
    count = len(ops)
    must = 0
    for i, op in enumerate(ops):
        if op.ret != math.inf:
            must |= 1 << i
    seen: set[tuple[int, bytes | None]] = set()
    steps = 0

    def search(done: int, value: bytes | None) -> bool:
        nonlocal steps
        if done & must == must:
            return True
        if (done, value) in seen:
            return False
        seen.add((done, value))
        steps += 1
        if steps % 512 == 0 and time.monotonic() > deadline:
            raise _Budget()
        horizon = min(ops[i].ret for i in range(count) if not done >> i & 1)
        for i in range(count):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.invoke > horizon:
                break  # sorted by invocation: nothing later can go first
            if op.kind == "get":
                if op.value == value and search(done | 1 << i, value):
                    return True
            elif search(done | 1 << i, op.value):
                return True
        return False

    try:
        return "ok" if search(0, None) else "violation"
    except _Budget:
        return "unknown"
    except RecursionError:
        return "unknown"


def check(ops: list[Op], budget: float = 30.0) -> dict[str, Verdict]:
    """The verdict for every key of the history."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    deadline = time.monotonic() + budget
    return {key: check_key(key_ops, deadline) for key, key_ops in sorted(by_key.items())}
