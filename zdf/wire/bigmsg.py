"""Control messages too big for one frame: chunked on the way out, rebuilt on the way in.

Theory of operation. A function task's argument or result can be far larger than
a socket's message limit (``sockets.DEFAULT_MAX_MESSAGE_BYTES``; libzmq drops a
peer that passes it). Every message whose parts together pass
``CHUNK_THRESHOLD`` is sent as a ``zdf.wire.chunked`` transfer of its parts (the
encoded envelope and its frames), each chunk an ordinary event::

    {"v": 1, "k": "ev", "op": "chunk", "b": chunk header}  data parts...

and the receiving side, on the last chunk, handles the rebuilt parts exactly as
if the message had come whole (the envelope is decoded then, the frames are
views of one buffer). Small messages go as they are, and overtake the chunks of
a big one (a window of chunks in flight per peer, ``BigSender``), so a big
value never holds up the small tasks sharing its socket.

Senders of batches keep a batch that passes the threshold to one big entry
(``split_batch``; a worker ends its slice of tasks there), so that a chunked
message carries one value beside at most a threshold of small ones: the
receiving side bounds a transfer by ``max-value-bytes`` plus ``ENVELOPE_SLACK``.

Who uses it: ``rpc.Channel`` when asked (``enable_chunks``: the master's
ROUTER, the workers' function-task sockets), the client's transport (its DEALERs
to the master and to a leased worker, its result PULL) and the workers' result
PUSHes. Only function-task messages carry frames that large, and every peer they
go to rebuilds chunks; a channel with chunks on must not send such frames to a
peer that does not (an executor, a command-line ``RpcClient``): it would answer
``unknown operation 'chunk'``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

import zmq

from zdf.errors import ProtocolError
from zdf.wire.chunked import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_TRANSFERS,
    ChunkSender,
    Reassembler,
    Tracker,
)
from zdf.wire.codec import Kind, encode

CHUNK = "chunk"  # the operation of one chunk
_CHUNK_EVENT = encode(Kind.EVENT, CHUNK, 0, None)
CHUNK_PREFIX = _CHUNK_EVENT[: _CHUNK_EVENT.index(CHUNK.encode()) + len(CHUNK)]
"""How every chunk's envelope starts: its data parts are then read without a copy."""
CHUNK_THRESHOLD = DEFAULT_CHUNK_BYTES  # a message above this goes in chunks
# What a chunked message may carry beside its one value: its envelope, and smaller
# values batched with it up to the threshold.
ENVELOPE_SLACK = 2 * CHUNK_THRESHOLD
DEFAULT_MAX_VALUE_BYTES = 1 << 30  # the master's ``max-value-bytes`` default
PUMP_INTERVAL = 0.001  # while chunks wait, how often their window is checked

T = TypeVar("T")
SendParts = Callable[[Any, list[Any]], "Tracker | bool | None"]
"""``send(route, parts)``: send one message, tracked; False if it cannot be taken now."""


def is_big(parts: Sequence[Any]) -> bool:
    """Whether a message of ``parts`` (flat byte buffers: ``len`` is their size)
    goes in chunks."""
    return sum(map(len, parts)) > CHUNK_THRESHOLD


def split_batch(
    entries: Sequence[T], frames_of: Callable[[T], Sequence[Any]], limit: int = CHUNK_THRESHOLD
) -> Iterator[Sequence[T]]:
    """``entries`` in batches of at most ``limit`` bytes of frames, except that an
    entry above the limit alone is a batch of its own (the only one a chunked
    message carries). A batch within the limit, the usual case, is yielded as is."""
    sizes = [sum(map(len, frames_of(entry))) for entry in entries]
    if sum(sizes) <= limit:
        if entries:
            yield entries
        return
    batch: list[T] = []
    size = 0
    for entry, nbytes in zip(entries, sizes, strict=True):
        if batch and size + nbytes > limit:
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += nbytes
    if batch:
        yield batch


def send_tracked(sock: zmq.Socket[bytes], parts: list[Any], flags: int = 0) -> Any:
    """Send ``parts`` zero-copy and tracked; False when a non-blocking send finds
    the socket full."""
    try:
        return sock.send_multipart(parts, flags, copy=False, track=True)
    except zmq.Again:
        return False


class BigSender:
    """Chunked messages in flight, a window per route (a peer or a socket)."""

    def __init__(self, send: SendParts, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._send = send
        self.chunk_bytes = chunk_bytes
        self._routes: dict[Hashable, ChunkSender] = {}

    @property
    def busy(self) -> bool:
        return any(sender.busy for sender in self._routes.values())

    def send(self, route: Hashable, parts: Sequence[Any]) -> None:
        """Queue the message of ``parts`` (kept by reference) as chunks for ``route``."""
        sender = self._routes.get(route)
        if sender is None:

            def send_chunk(route: Any, header: dict[str, Any], data: list[memoryview]) -> Any:
                return self._send(route, [encode(Kind.EVENT, CHUNK, 0, header), *data])

            sender = self._routes[route] = ChunkSender(send_chunk, chunk_bytes=self.chunk_bytes)
        sender.add(parts, route=route)
        sender.pump()

    def pump(self) -> bool:
        """Send what the windows allow; True while any chunk waits."""
        idle = [route for route, sender in self._routes.items() if not sender.pump()]
        for route in idle:
            del self._routes[route]
        return bool(self._routes)

    def sending_to(self, route: Hashable) -> bool:
        """Whether chunks for ``route`` wait or are in flight."""
        return route in self._routes

    def drop(self, route: Hashable) -> None:
        """Forget what waits for ``route`` (its socket closes, its peer is gone)."""
        self._routes.pop(route, None)


class BigReceiver:
    """Rebuilds chunked messages, one ``Reassembler`` for every peer of a socket."""

    def __init__(
        self, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES, max_transfers: int | None = None
    ) -> None:
        self.reassembler = Reassembler(
            max_value_bytes + ENVELOPE_SLACK, max_transfers=max_transfers or DEFAULT_MAX_TRANSFERS
        )

    @property
    def max_value_bytes(self) -> int:
        return self.reassembler.max_value_bytes - ENVELOPE_SLACK

    @max_value_bytes.setter
    def max_value_bytes(self, value: int) -> None:
        self.reassembler.max_value_bytes = value + ENVELOPE_SLACK

    def feed(self, sender: Hashable, header: Any, data: Sequence[Any]) -> list[Any] | None:
        """One chunk; the parts of the message it completes, else None.
        ``ProtocolError`` for a chunk that breaks the rules."""
        if len(self.reassembler):
            self.reassembler.expire()
        done = self.reassembler.feed(sender, header, data)
        if done is None:
            return None
        if not done.frames:
            raise ProtocolError("a chunked message without parts")
        return list(done.frames)
