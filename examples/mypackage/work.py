"""Functions the README's function-task example submits."""

from __future__ import annotations


def score(x: int, weight: float = 1.0) -> float:
    """A stand-in for real work: a weighted square."""
    return weight * x * x


def train(path: str, retries: int = 0) -> dict[str, object]:
    """A stand-in for a model fit: names what it was given (``retries`` is its own
    keyword, not zdf's: zdf's options are set with ``client.options``)."""
    return {"data": path, "retries": retries}
