"""Functions the README's function-task example submits."""

from __future__ import annotations


def score(x: int, weight: float = 1.0) -> float:
    """A stand-in for real work: a weighted square."""
    return weight * x * x
