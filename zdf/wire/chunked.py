"""Payloads larger than one message, sent as a sequence of bounded chunks.

Theory of operation. A payload is a list of frames (``zdf.wire.payload``: a
msgpack head and the raw buffers of numpy arrays; or a whole multipart message).
libzmq drops the connection of a peer whose message is over the socket's
``MAXMSGSIZE``, so a payload above a few MiB travels as a *transfer*: the bytes
of its frames, taken end to end as one stream, cut into chunks of at most
``chunk_bytes``. Each chunk is one message: a small header, then its data as
one or more parts (``memoryview`` slices of the sender's frames, one per frame
the chunk touches: nothing is copied to send)::

    {"id": transfer id, "seq": 0, "sizes": [frame sizes], "meta": anything}  data...
    {"id": transfer id, "seq": 1}                                           data...
    ...

The first chunk says how many bytes follow (``sizes``) and carries ``meta``,
whatever the caller wants delivered with the frames (the envelope of the message
that did not fit, say). The transfer ends when the last byte has arrived.

Sending (``ChunkSender``). Transfers are queued per sender and sent a *window*
at a time: a chunk handed to the transport counts against ``window_bytes`` until
the transport has let go of it (pyzmq's ``MessageTracker``: the bytes are in the
kernel, or with the receiver over inproc). So the queue of a socket never holds
more than a window of one big value, and a small message sent meanwhile
overtakes the rest of it: chunks of the transfers under way (at most
``max_active`` at a time, round robin) interleave with the socket's other
traffic. The owner calls ``pump()`` whenever it can (its event loop, a short
timer while ``busy``): it drops the released chunks from the window and sends
more.

Receiving (``Reassembler``). A transfer is keyed by its sender (a ROUTER's peer
identity, or anything hashable) and its id. The first chunk allocates the
whole value at once, one buffer (``allocate``) in which every frame starts on
a 64-byte boundary (numpy arrays are aligned); every chunk is copied into it
with numpy (the one copy on the way), and the last returns the frames as
``memoryview``s of that buffer. A chunk out of order, repeated, larger than
what was announced or for a transfer that never started raises
``ProtocolError`` and drops its transfer; so does a transfer over
``max_value_bytes`` (at its first chunk, before anything is allocated), or one
more than ``max_transfers`` from the same sender. Transfers silent for
``timeout`` seconds are abandoned by ``expire()`` and their memory freed.

Example, a DEALER sending a 100 MiB array to a ROUTER::

    frames = payload.pack(np.zeros(100 << 20, np.uint8))
    sender = ChunkSender(lambda route, header, parts: dealer.send_multipart(
        [codec.packb(header), *parts], copy=False, track=True))
    sender.add(frames, meta={"op": "put"})
    while sender.pump():                 # in real code: from the event loop
        poll_router_once()               # the receiving side, below

    reassembler = Reassembler(max_value_bytes=256 << 20)
    peer, header, *parts = router.recv_multipart(copy=False)
    done = reassembler.feed(peer.bytes, codec.unpackb(header.buffer), parts)
    if done is not None:
        value = payload.unpack(done.frames)  # done.meta == {"op": "put"}
"""

from __future__ import annotations

import itertools
import mmap
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zdf.errors import ProtocolError

DEFAULT_CHUNK_BYTES = 8 << 20  # measured: 4-16 MiB move a 256 MiB value alike (bench/)
DEFAULT_WINDOW_BYTES = 4 * DEFAULT_CHUNK_BYTES  # sent, not yet let go of by the transport
DEFAULT_MAX_ACTIVE = 2  # transfers of one sender interleaved at a time
DEFAULT_MAX_TRANSFERS = 4  # transfers of one sender a receiver keeps under way
DEFAULT_TRANSFER_TIMEOUT = 30.0  # a transfer silent this long is abandoned
MAX_FRAMES = 1 << 20  # frames in one transfer
ALIGN = 64  # where each rebuilt frame starts in the receiver's buffer
MMAP_THRESHOLD = 1 << 20  # a rebuilt value this large gets a memory map of its own


class Tracker(Protocol):
    """What the transport returns for a sent chunk (pyzmq's ``MessageTracker``)."""

    @property
    def done(self) -> bool: ...


SendChunk = Callable[[Any, dict[str, Any], list[memoryview]], "Tracker | bool | None"]
"""``send(route, header, parts)``: put one chunk on the wire (one message: the header,
then the parts); a tracker, None if the transport let go of it at once, or False if
it could not take it now (the same chunk is offered again at the next ``pump``)."""


def frame_view(frame: Any) -> memoryview:
    """A flat byte view of ``bytes``, a ``memoryview``, a numpy buffer or a ``zmq.Frame``."""
    buf = frame.buffer if hasattr(frame, "buffer") and not isinstance(frame, memoryview) else frame
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def payload_bytes(frames: Sequence[Any]) -> int:
    """The bytes of ``frames`` together."""
    return sum(frame_view(f).nbytes for f in frames)


def split(frames: Sequence[Any], chunk_bytes: int) -> Iterator[list[memoryview]]:
    """The bytes of ``frames`` end to end, in chunks of at most ``chunk_bytes``; a chunk
    is the views (nothing is copied) of the frames' pieces it holds. An empty payload
    is one chunk without data."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    pending: list[memoryview] = []
    size = 0
    yielded = False
    for frame in frames:
        view = frame_view(frame)
        start = 0
        while start < view.nbytes:
            take = min(chunk_bytes - size, view.nbytes - start)
            pending.append(view[start : start + take])
            size += take
            start += take
            if size == chunk_bytes:
                yield pending
                pending, size, yielded = [], 0, True
    if pending or not yielded:
        yield pending


@dataclass
class _Outgoing:
    id: int
    route: Any
    chunks: Iterator[list[memoryview]]
    sizes: list[int]
    meta: Any
    seq: int = 0
    held: list[memoryview] | None = None  # a chunk the transport could not take yet


class ChunkSender:
    """Transfers queued on one transport, sent a window at a time (module docstring)."""

    def __init__(
        self,
        send: SendChunk,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        max_active: int = DEFAULT_MAX_ACTIVE,
    ) -> None:
        if chunk_bytes < 1 or window_bytes < chunk_bytes or max_active < 1:
            raise ValueError("need chunk_bytes >= 1, window_bytes >= chunk_bytes, max_active >= 1")
        self._send = send
        self.chunk_bytes = chunk_bytes
        self.window_bytes = window_bytes
        self.max_active = max_active
        # Random ids: several senders may share one receiving socket (a PULL).
        self._ids = itertools.count(random.getrandbits(48))
        self._waiting: deque[_Outgoing] = deque()
        self._active: deque[_Outgoing] = deque()
        self._in_flight: deque[tuple[Tracker, int]] = deque()
        self.in_flight_bytes = 0
        self.sent_chunks = 0

    @property
    def busy(self) -> bool:
        """Chunks are left to send, or sent ones not yet let go of (call ``pump``)."""
        return bool(self._active or self._waiting or self._in_flight)

    def add(self, frames: Sequence[Any], meta: Any = None, route: Any = None) -> int:
        """Queue ``frames`` (kept by reference until sent) for ``route``; the transfer id."""
        sizes = [frame_view(f).nbytes for f in frames]
        if len(sizes) > MAX_FRAMES:
            raise ValueError(f"a transfer carries at most {MAX_FRAMES} frames")
        transfer = _Outgoing(next(self._ids), route, split(frames, self.chunk_bytes), sizes, meta)
        self._waiting.append(transfer)
        return transfer.id

    def drop(self, route: Any) -> int:
        """Forget the transfers not finished for ``route`` (its peer is gone); how many."""
        before = len(self._active) + len(self._waiting)
        self._active = deque(t for t in self._active if t.route != route)
        self._waiting = deque(t for t in self._waiting if t.route != route)
        return before - len(self._active) - len(self._waiting)

    def pump(self) -> bool:
        """Send what the window allows; True while ``busy``."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0].done:
            self.in_flight_bytes -= in_flight.popleft()[1]
        while self.in_flight_bytes < self.window_bytes:
            while self._waiting and len(self._active) < self.max_active:
                self._active.append(self._waiting.popleft())
            if not self._active:
                break
            transfer = self._active.popleft()
            parts = transfer.held if transfer.held is not None else next(transfer.chunks, None)
            if parts is None:
                continue  # all sent
            header: dict[str, Any] = {"id": transfer.id, "seq": transfer.seq}
            if transfer.seq == 0:
                header["sizes"] = transfer.sizes
                header["meta"] = transfer.meta
            tracker = self._send(transfer.route, header, parts)
            if tracker is False:
                transfer.held = parts
                self._active.appendleft(transfer)
                break  # the transport is full: try again at the next pump
            transfer.held = None
            transfer.seq += 1
            self.sent_chunks += 1
            size = sum(part.nbytes for part in parts)
            if tracker is not None and not isinstance(tracker, bool) and not tracker.done:
                in_flight.append((tracker, size))
                self.in_flight_bytes += size
            self._active.append(transfer)  # round robin; dropped at its end above
        return self.busy


@dataclass(frozen=True, slots=True)
class Completed:
    """A transfer whose last chunk arrived: ``meta`` as sent, ``frames`` as views."""

    meta: Any
    frames: list[memoryview]


def allocate(size: int) -> np.ndarray[Any, Any]:
    """``size`` bytes, 64-byte aligned, for a value being rebuilt. Large ones are an
    anonymous map of their own (page aligned; numpy's allocator would ask the kernel
    for huge pages, whose compaction stalled first writes for a second here), freed
    when the last view of them goes."""
    if size < MMAP_THRESHOLD:
        owner = np.empty(size + ALIGN, np.uint8)  # numpy aligns to 16 bytes: shift
        shift = -owner.ctypes.data % ALIGN
        return owner[shift : shift + size]
    return np.frombuffer(mmap.mmap(-1, size), np.uint8)


@dataclass
class _Incoming:
    buffer: np.ndarray[Any, Any]  # every frame's bytes, each frame aligned
    sizes: list[int]
    starts: list[int]
    meta: Any
    total: int
    last_heard: float
    received: int = 0
    seq: int = 1  # the next expected
    frame: int = 0  # where the next byte goes: frame index, offset in it
    offset: int = 0


class Reassembler:
    """Rebuilds transfers on the receiving side (module docstring)."""

    def __init__(
        self,
        max_value_bytes: int,
        *,
        timeout: float = DEFAULT_TRANSFER_TIMEOUT,
        max_transfers: int = DEFAULT_MAX_TRANSFERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_value_bytes = max_value_bytes
        self.timeout = timeout
        self.max_transfers = max_transfers
        self.clock = clock
        self._transfers: dict[tuple[Hashable, int], _Incoming] = {}
        self._per_sender: dict[Hashable, int] = {}
        self.abandoned = 0  # transfers expired
        self.rejected = 0  # chunks refused with ProtocolError

    def __len__(self) -> int:
        return len(self._transfers)

    @property
    def pending_bytes(self) -> int:
        """Bytes announced by the transfers under way (allocated, if not all touched)."""
        return sum(t.total for t in self._transfers.values())

    def feed(self, sender: Hashable, header: Any, parts: Sequence[Any]) -> Completed | None:
        """Take one chunk (its header and data parts); the rebuilt frames when it was
        the last of its transfer. ``ProtocolError`` for a chunk that breaks the rules
        (its transfer is dropped)."""
        try:
            return self._feed(sender, header, [frame_view(part) for part in parts])
        except ProtocolError:
            self.rejected += 1
            raise

    def _feed(self, sender: Hashable, header: Any, parts: list[memoryview]) -> Completed | None:
        if not isinstance(header, dict):
            raise ProtocolError("a chunk header is not a map")
        tid, seq = header.get("id"), header.get("seq")
        if not isinstance(tid, int) or not isinstance(seq, int) or not _is_int(tid):
            raise ProtocolError("a chunk needs integer 'id' and 'seq'")
        if isinstance(seq, bool) or tid < 0 or seq < 0:
            raise ProtocolError("a chunk needs integer 'id' and 'seq'")
        key = (sender, tid)
        size = sum(part.nbytes for part in parts)
        now = self.clock()
        if seq == 0:
            if key in self._transfers:
                self._drop(key)
                raise ProtocolError(f"transfer {tid} started twice")
            transfer = self._start(sender, header, now)
            self._transfers[key] = transfer
            self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        else:
            found = self._transfers.get(key)
            if found is None:
                raise ProtocolError(f"chunk {seq} of transfer {tid}, which is not under way")
            transfer = found
            if seq != transfer.seq:
                self._drop(key)
                raise ProtocolError(f"chunk {seq} of transfer {tid} where {transfer.seq} was due")
            transfer.seq += 1
            if size == 0:
                self._drop(key)
                raise ProtocolError(f"an empty chunk in transfer {tid}")
        if transfer.received + size > transfer.total:
            self._drop(key)
            raise ProtocolError(f"transfer {tid} is longer than the {transfer.total} bytes it said")
        transfer.last_heard = now
        for part in parts:
            self._write(transfer, part)
        if transfer.received < transfer.total:
            return None
        self._drop(key)
        buffer = memoryview(transfer.buffer.data).cast("B")
        views = [
            buffer[start : start + size]
            for start, size in zip(transfer.starts, transfer.sizes, strict=True)
        ]
        return Completed(transfer.meta, views)

    def _start(self, sender: Hashable, header: dict[str, Any], now: float) -> _Incoming:
        sizes = header.get("sizes")
        if (
            not isinstance(sizes, list)
            or not sizes
            or len(sizes) > MAX_FRAMES
            or not all(_is_int(s) and s >= 0 for s in sizes)
        ):
            raise ProtocolError("the first chunk needs 'sizes', a list of frame lengths")
        total = sum(sizes)
        if total > self.max_value_bytes:
            raise ProtocolError(
                f"a value of {total} bytes is over the limit of {self.max_value_bytes} "
                "(max-value-bytes)"
            )
        if self._per_sender.get(sender, 0) >= self.max_transfers:
            raise ProtocolError(f"more than {self.max_transfers} transfers under way from a peer")
        starts, end = [], 0
        for size in sizes:
            starts.append(end)
            end += -(-size // ALIGN) * ALIGN
        return _Incoming(allocate(end), sizes, starts, header.get("meta"), total, now)

    def _write(self, transfer: _Incoming, data: memoryview) -> None:
        """Copy ``data`` to where the stream is, across frame ends (frames are padded)."""
        pos = 0
        left = data.nbytes
        sizes, starts = transfer.sizes, transfer.starts
        while left:
            room = sizes[transfer.frame] - transfer.offset
            if room == 0:
                transfer.frame += 1
                transfer.offset = 0
                continue
            take = min(room, left)
            at = starts[transfer.frame] + transfer.offset
            transfer.buffer[at : at + take] = np.frombuffer(data, np.uint8, take, pos)
            transfer.offset += take
            pos += take
            left -= take
        transfer.received += data.nbytes

    def _drop(self, key: tuple[Hashable, int]) -> None:
        if self._transfers.pop(key, None) is None:
            return
        sender = key[0]
        count = self._per_sender.get(sender, 0) - 1
        if count > 0:
            self._per_sender[sender] = count
        else:
            self._per_sender.pop(sender, None)

    def forget(self, sender: Hashable) -> int:
        """Drop every transfer from ``sender`` (it is gone); how many."""
        keys = [key for key in self._transfers if key[0] == sender]
        for key in keys:
            self._drop(key)
        return len(keys)

    def expire(self) -> list[tuple[Hashable, int]]:
        """Abandon the transfers silent for ``timeout``; their (sender, id)."""
        cutoff = self.clock() - self.timeout
        stale = [key for key, t in self._transfers.items() if t.last_heard < cutoff]
        for key in stale:
            self._drop(key)
        self.abandoned += len(stale)
        return stale


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
