"""Runs on a worker: one task that applies a function to a chunk of items (``Client.map``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zdf.executor.fnrunner import resolve_function

_cache: dict[str, Any] = {}


def run_chunk(path: str, items: list[list[Any]]) -> list[Any]:
    """``fn(*args)`` for each ``args`` of ``items`` (a chunk of ``Client.map``)."""
    fn = resolve_function(path, _cache)
    return [fn(*args) for args in items]


class PickledChunk:
    """``Client.map`` of a function without an import path: pickled once per map
    (where the cluster allows pickles), applied to each chunk's items."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, items: list[list[Any]]) -> list[Any]:
        return [self.fn(*args) for args in items]
