"""Chunked transfers: splitting, the sender's window, the receiver's rules, and a real
DEALER/ROUTER pair carrying a value over the socket's message limit."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import zmq

from zdf.errors import ProtocolError
from zdf.wire import payload
from zdf.wire.chunked import ALIGN, ChunkSender, Reassembler, payload_bytes, split
from zdf.wire.codec import packb, unpackb
from zdf.wire.sockets import close_socket, make_socket


class FakeTracker:
    def __init__(self) -> None:
        self.done = False


def collect(frames: list[Any], chunk_bytes: int) -> list[tuple[dict[str, Any], list[bytes]]]:
    """Every chunk a sender emits for ``frames``, with trackers released at once."""
    sent: list[tuple[dict[str, Any], list[bytes]]] = []

    def send(route: Any, header: dict[str, Any], parts: list[memoryview]) -> None:
        sent.append((dict(header), [bytes(p) for p in parts]))

    sender = ChunkSender(send, chunk_bytes=chunk_bytes, window_bytes=chunk_bytes)
    sender.add(frames, meta={"op": "x"})
    while sender.pump():
        pass
    return sent


def test_split_cuts_the_stream_into_bounded_views_without_copying() -> None:
    big = np.arange(1000, dtype=np.uint8)
    chunks = list(split([b"head", big], 300))
    assert [sum(p.nbytes for p in c) for c in chunks] == [300, 300, 300, 104]
    assert bytes(chunks[0][0]) == b"head"
    # The array's pieces are views of the array itself.
    assert chunks[1][0].obj is not None and np.shares_memory(np.asarray(chunks[1][0]), big)
    assert list(split([], 10)) == [[]]
    assert list(split([b""], 10)) == [[]]


def test_round_trip_rebuilds_frames_aligned_and_equal() -> None:
    value = {"a": np.arange(100_003, dtype=np.float64), "b": b"x" * 77, "c": [1, 2]}
    frames = payload.pack(value)
    chunks = collect(frames, 4096)
    assert len(chunks) > 100
    assert chunks[0][0]["meta"] == {"op": "x"} and "sizes" in chunks[0][0]
    assert "sizes" not in chunks[1][0]
    receiver = Reassembler(max_value_bytes=10 << 20)
    done = None
    for i, (header, parts) in enumerate(chunks):
        done = receiver.feed(b"peer", header, parts)
        assert (done is None) == (i < len(chunks) - 1)
    assert done is not None and done.meta == {"op": "x"}
    assert [f.nbytes for f in done.frames] == [len(bytes(f)) for f in frames]
    back = payload.unpack(done.frames)
    np.testing.assert_array_equal(back["a"], value["a"])
    assert back["b"] == value["b"] and back["c"] == [1, 2]
    # Every frame starts aligned in one buffer: the array is a view of it, not a copy.
    assert back["a"].ctypes.data % ALIGN == 0
    assert np.shares_memory(back["a"], np.asarray(done.frames[0].obj))
    assert len(receiver) == 0 and receiver.pending_bytes == 0


def test_empty_and_tiny_payloads_complete() -> None:
    for frames in ([b""], [b"", b"", b"ab"], [b"abc"]):
        chunks = collect(frames, 2)
        receiver = Reassembler(max_value_bytes=100)
        done = None
        for header, parts in chunks:
            done = receiver.feed(1, header, parts)
        assert done is not None
        assert [bytes(f) for f in done.frames] == frames


def test_out_of_order_duplicate_and_unknown_chunks_are_refused() -> None:
    chunks = collect([bytes(range(256)) * 40], 1000)  # 11 chunks
    receiver = Reassembler(max_value_bytes=1 << 20)
    receiver.feed("p", *chunks[0])
    with pytest.raises(ProtocolError, match="where 1 was due"):
        receiver.feed("p", *chunks[2])
    assert len(receiver) == 0  # the transfer is dropped
    with pytest.raises(ProtocolError, match="not under way"):
        receiver.feed("p", *chunks[1])
    receiver.feed("p", *chunks[0])
    receiver.feed("p", *chunks[1])
    with pytest.raises(ProtocolError, match="where 2 was due"):
        receiver.feed("p", *chunks[1])  # a duplicate
    receiver.feed("p", *chunks[0])
    with pytest.raises(ProtocolError, match="started twice"):
        receiver.feed("p", *chunks[0])
    assert receiver.rejected == 4
    # The same transfer id from another sender is another transfer.
    receiver.feed("q", *chunks[0])
    assert len(receiver) == 1


def test_oversized_and_malformed_chunks_are_refused() -> None:
    receiver = Reassembler(max_value_bytes=1000)
    with pytest.raises(ProtocolError, match="over the limit of 1000"):
        receiver.feed("p", {"id": 1, "seq": 0, "sizes": [600, 401]}, [b"x"])
    assert len(receiver) == 0
    receiver.feed("p", {"id": 2, "seq": 0, "sizes": [10]}, [b"12345"])
    with pytest.raises(ProtocolError, match="longer than"):
        receiver.feed("p", {"id": 2, "seq": 1}, [b"123456"])
    for header in (None, {"id": "a", "seq": 0}, {"id": 1, "seq": -1}, {"id": 3, "seq": 0}):
        with pytest.raises(ProtocolError):
            receiver.feed("p", header, [b"x"])
    with pytest.raises(ProtocolError, match="sizes"):
        receiver.feed("p", {"id": 4, "seq": 0, "sizes": [1, -1]}, [])


def test_transfers_per_sender_are_bounded() -> None:
    receiver = Reassembler(max_value_bytes=100, max_transfers=2)
    receiver.feed("p", {"id": 1, "seq": 0, "sizes": [10]}, [b"1"])
    receiver.feed("p", {"id": 2, "seq": 0, "sizes": [10]}, [b"1"])
    with pytest.raises(ProtocolError, match="more than 2 transfers"):
        receiver.feed("p", {"id": 3, "seq": 0, "sizes": [10]}, [b"1"])
    receiver.feed("q", {"id": 3, "seq": 0, "sizes": [10]}, [b"1"])
    assert receiver.forget("p") == 2 and len(receiver) == 1


def test_abandoned_transfers_expire() -> None:
    now = [100.0]
    receiver = Reassembler(max_value_bytes=100, timeout=5.0, clock=lambda: now[0])
    receiver.feed("p", {"id": 1, "seq": 0, "sizes": [10]}, [b"1"])
    now[0] += 3
    receiver.feed("q", {"id": 1, "seq": 0, "sizes": [10]}, [b"1"])
    now[0] += 3
    assert receiver.expire() == [("p", 1)]
    assert len(receiver) == 1 and receiver.abandoned == 1
    with pytest.raises(ProtocolError, match="not under way"):
        receiver.feed("p", {"id": 1, "seq": 1}, [b"2"])


def test_sender_keeps_a_window_and_interleaves_transfers() -> None:
    trackers: list[FakeTracker] = []
    order: list[tuple[Any, int]] = []

    def send(route: Any, header: dict[str, Any], parts: list[memoryview]) -> FakeTracker:
        order.append((route, header["seq"]))
        trackers.append(FakeTracker())
        return trackers[-1]

    sender = ChunkSender(send, chunk_bytes=100, window_bytes=300, max_active=2)
    sender.add([b"a" * 1000], route="A")
    sender.add([b"b" * 1000], route="B")
    sender.add([b"c" * 200], route="C")
    assert sender.pump()
    # Three chunks fill the window; the first two transfers take turns.
    assert order == [("A", 0), ("B", 0), ("A", 1)]
    assert sender.in_flight_bytes == 300
    assert sender.pump() and len(order) == 3  # nothing let go of: nothing more sent
    trackers[0].done = True
    sender.pump()
    assert order[3:] == [("B", 1)]
    assert sender.drop("B") == 1
    for _ in range(100):
        for tracker in trackers:
            tracker.done = True
        if not sender.pump():
            break
    routes = [route for route, _ in order]
    assert routes.count("A") == 10 and routes.count("C") == 2 and routes.count("B") == 2
    assert not sender.busy and sender.in_flight_bytes == 0


def test_a_value_over_the_message_limit_crosses_a_dealer_router_pair() -> None:
    """The socket refuses any message over 1 MiB; a 24 MiB array crosses in chunks
    of 256 KiB, with a small message sent meanwhile arriving before the end."""
    limit = 1 << 20
    router = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*", max_message_bytes=limit)
    dealer = make_socket(
        zmq.DEALER, connect=router.getsockopt_string(zmq.LAST_ENDPOINT), max_message_bytes=limit
    )
    try:
        array = np.random.default_rng(1).integers(0, 1 << 30, 3 << 20, dtype=np.int64)
        frames = payload.pack({"x": array})
        assert payload_bytes(frames) > 20 * limit

        def send(route: Any, header: dict[str, Any], parts: list[memoryview]) -> Any:
            return dealer.send_multipart([packb(header), *parts], copy=False, track=True)

        sender = ChunkSender(send, chunk_bytes=256 << 10, window_bytes=1 << 20)
        sender.add(frames, meta="big")
        sender.pump()
        dealer.send_multipart([packb("small"), b"!"])  # behind at most a window of chunks
        receiver = Reassembler(max_value_bytes=64 << 20)
        seen_small_at = None
        chunks = 0
        done = None
        deadline = time.monotonic() + 30
        while done is None and time.monotonic() < deadline:
            sender.pump()
            if not router.poll(1):
                continue
            peer, head, *parts = router.recv_multipart(copy=False)
            header = unpackb(head.buffer)
            if header == "small":
                seen_small_at = chunks
                continue
            chunks += 1
            done = receiver.feed(peer.bytes, header, parts)
        assert done is not None and done.meta == "big"
        np.testing.assert_array_equal(payload.unpack(done.frames)["x"], array)
        assert seen_small_at is not None and seen_small_at <= 8 < chunks
    finally:
        close_socket(dealer)
        close_socket(router)


def test_a_chunk_the_transport_refuses_is_offered_again() -> None:
    accept = [False]
    sent: list[tuple[int, bytes]] = []

    def send(route: Any, header: dict[str, Any], parts: list[memoryview]) -> bool | None:
        if not accept[0]:
            return False
        sent.append((header["seq"], b"".join(bytes(p) for p in parts)))
        return None

    sender = ChunkSender(send, chunk_bytes=4, window_bytes=4)
    sender.add([b"abcdefghij"])
    assert sender.pump() and sent == []
    accept[0] = True
    while sender.pump():
        pass
    assert sent == [(0, b"abcd"), (1, b"efgh"), (2, b"ij")]
