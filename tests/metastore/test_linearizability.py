"""The checker itself: it must accept linearizable histories and catch stale reads."""

from __future__ import annotations

import math
import time

from .linearizability import Op, check, check_key


def test_sequential_and_concurrent_histories_pass() -> None:
    ops = [
        Op(0, "put", "k", b"a", 0, 1),
        Op(1, "get", "k", b"a", 2, 3),
        Op(0, "put", "k", b"b", 4, 6),
        Op(1, "get", "k", b"a", 5, 7),  # overlaps the put of b: may see a
        Op(1, "get", "k", b"b", 8, 9),
    ]
    assert check(ops) == {"k": "ok"}


def test_stale_read_is_a_violation() -> None:
    ops = [
        Op(0, "put", "k", b"a", 0, 1),
        Op(0, "put", "k", b"b", 2, 3),
        Op(1, "get", "k", b"a", 4, 5),  # b was acknowledged before this read began
    ]
    assert check(ops) == {"k": "violation"}


def test_lost_acknowledged_write_is_a_violation() -> None:
    ops = [Op(0, "put", "k", b"a", 0, 1), Op(1, "get", "k", None, 2, 3)]
    assert check(ops)["k"] == "violation"


def test_unknown_outcome_may_or_may_not_happen() -> None:
    took_effect = [Op(0, "put", "k", b"a", 0), Op(1, "get", "k", b"a", 5, 6)]
    never = [Op(0, "put", "k", b"a", 0), Op(1, "get", "k", None, 5, 6)]
    assert check(took_effect)["k"] == "ok" and check(never)["k"] == "ok"
    # ...but not before it was invoked.
    early = [Op(1, "get", "k", b"a", 0, 1), Op(0, "put", "k", b"a", 2)]
    assert check(early)["k"] == "violation"


def test_budget_reports_unknown_instead_of_hanging() -> None:
    # Many concurrent writes and contradicting reads: a large search space.
    ops = [Op(i, "put", "k", str(i).encode(), 0, 100) for i in range(40)]
    ops += [Op(100 + i, "get", "k", str(i % 7).encode(), 1, 99) for i in range(40)]
    ops.append(Op(999, "get", "k", b"nothing-wrote-this", 101, 102))
    start = time.monotonic()
    verdict = check_key(ops, time.monotonic() + 0.5)
    assert verdict in ("unknown", "violation")
    assert time.monotonic() - start < 5
    assert math.inf > 0
