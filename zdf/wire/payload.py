"""Values that travel as msgpack with numpy arrays as zero-copy frames.

``pack(value)`` returns a list of frames: the first is msgpack in which every
numpy array is an ext reference (dtype, shape, frame index) and the others are
the arrays' raw buffers, sent without a copy. ``unpack(frames)`` rebuilds the
value; the arrays it returns are read-only views on the received buffers.
Tuples come back as lists, as msgpack has no tuple. The master forwards a
task's frames without unpacking them.

References. ``pack(value, refer)`` hands every object msgpack cannot encode to
``refer`` first; what it returns (an ``ExtType``) stands in for the object:
the client turns a ``Future`` among a task's arguments into a reference
(``REF_EXT``, the index of the input) this way, at no cost to arguments without
one. ``unpack(frames, resolve)`` calls ``resolve(index)`` for each reference:
the worker puts the input's value there, as it sits in its object store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np

from zdf.errors import ProtocolError

ND_EXT = 1
REF_EXT = 2  # an input of a task (zdf.client.graph): its index among the task's inputs

Refer = Callable[[Any], Any]  # an object msgpack cannot encode -> an ExtType, or None
Resolve = Callable[[int], Any]  # a reference's index -> the value it stands for


def pack(value: Any, refer: Refer | None = None) -> list[Any]:
    buffers: list[Any] = []

    def default(obj: Any) -> Any:
        if refer is not None:
            ref = refer(obj)
            if ref is not None:
                return ref
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("numpy arrays of Python objects cannot be sent")
            array = np.ascontiguousarray(obj)
            buffers.append(array.data.cast("B") if array.size else b"")
            ref = msgpack.packb([len(buffers), array.dtype.str, list(array.shape)])
            return msgpack.ExtType(ND_EXT, ref)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, set | frozenset):
            return list(obj)
        raise TypeError(
            f"cannot send a value of type {type(obj).__name__}: arguments and results travel "
            "as msgpack (None, bool, int, float, str, bytes, lists, tuples, dicts, sets) "
            "and numpy arrays"
        )

    head = msgpack.packb(value, default=default, use_bin_type=True)
    return [head, *buffers]


def unpack(frames: Sequence[Any], resolve: Resolve | None = None) -> Any:
    if not frames:
        raise ProtocolError("a payload needs at least one frame")

    def ext_hook(code: int, data: bytes) -> Any:
        if code == REF_EXT and resolve is not None:
            return resolve(msgpack.unpackb(data))
        if code != ND_EXT:
            return msgpack.ExtType(code, data)
        index, dtype, shape = msgpack.unpackb(data)
        if not 0 < index < len(frames):
            raise ProtocolError("array reference to a missing frame")
        buf = frames[index]
        buf = buf.buffer if hasattr(buf, "buffer") else buf
        return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)

    head = frames[0]
    head = head.buffer if hasattr(head, "buffer") else head
    try:
        return msgpack.unpackb(head, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"bad payload: {type(exc).__name__}: {exc}") from None
