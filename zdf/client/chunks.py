"""Runs on a worker: one task that applies a function to a chunk of items (``Client.map``)."""

from __future__ import annotations

from typing import Any

from zdf.executor.fnrunner import resolve_function

_cache: dict[str, Any] = {}


def run_chunk(path: str, items: list[Any]) -> list[Any]:
    fn = resolve_function(path, _cache)
    return [fn(item) for item in items]
