"""Stream dtypes: numpy structured dtypes, as they travel in task params (msgpack).

A dtype travels as its ``numpy.lib.format`` description (``dtype_to_descr``),
with msgpack's lists turned back into the tuples numpy expects on arrival.
Dtypes read from the wire are kept by their description (``_built``): a task
with a thousand inputs of one dtype (the binlog of a 1,000-table job) builds it
once, not once per input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_BUILT = 256
"""Distinct wire dtypes a process keeps built."""
_built: dict[str, np.dtype[Any]] = {}


def dtype_to_wire(dtype: np.dtype[Any]) -> Any:
    descr = np.lib.format.dtype_to_descr(dtype)
    return [list(field) for field in descr] if isinstance(descr, list) else descr


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return [
            tuple(_tuples(v) for v in item) if isinstance(item, list) else item for item in value
        ]
    return value


def dtype_from_wire(value: Any) -> np.dtype[Any]:
    """A dtype from its wire form (or from anything ``np.dtype`` accepts, such as
    ``[["key", "<i8"], ["value", "<i8"]]`` in a job file)."""
    key = repr(value)
    dtype = _built.get(key)
    if dtype is not None:
        return dtype
    try:
        made: np.dtype[Any] = np.dtype(_tuples(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a numpy dtype: {value!r} ({exc})") from None
    if len(_built) < MAX_BUILT:
        _built[key] = made
    return made


def require_fields(dtype: np.dtype[Any], *names: str, what: str = "input") -> None:
    """``ValueError`` naming the first field of ``names`` that ``dtype`` lacks."""
    fields = dtype.names or ()
    for name in names:
        if name not in fields:
            raise ValueError(
                f"{what} has no field {name!r} (fields: {', '.join(fields) or 'none'})"
            )


def describe(dtype: np.dtype[Any]) -> str:
    """A short text of a structured dtype: ``key:int64, value:int64``."""
    if not dtype.names:
        return str(dtype)
    return ", ".join(f"{name}:{dtype[name]}" for name in dtype.names)
