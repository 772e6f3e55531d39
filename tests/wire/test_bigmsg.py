"""Big messages on a Channel pair: chunked out, rebuilt in, replies too; batches cut
so that a chunked message holds one big value; refused chunks counted."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import zmq

from zdf.wire import Call, Channel, Reactor, make_socket
from zdf.wire.bigmsg import CHUNK, CHUNK_THRESHOLD, is_big, split_batch
from zdf.wire.codec import Kind, encode, packb
from zdf.wire.payload import pack, unpack
from zdf.wire.sockets import close_socket

LIMIT = 16 << 20  # both sockets refuse a message over this


def test_a_request_and_its_reply_over_the_limit_cross_a_channel_pair() -> None:
    reactor = Reactor()
    router = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*", max_message_bytes=LIMIT)
    addr = router.getsockopt_string(zmq.LAST_ENDPOINT)
    dealer = make_socket(zmq.DEALER, connect=addr, max_message_bytes=LIMIT)

    def double(call: Call) -> Any:
        value = unpack(call.frames)
        call.reply({"n": len(call.frames)}, frames=pack(value * 2))
        return None

    server = Channel(reactor, router, {"double": double})
    client = Channel(reactor, dealer, {})
    server.enable_chunks(max_value_bytes=256 << 20)
    client.enable_chunks(max_value_bytes=256 << 20)
    answers: list[Any] = []
    try:
        array = np.arange(5 << 20, dtype=np.int64)  # 40 MiB
        client.request(
            "double",
            {},
            frames=pack(array),
            timeout=30,
            callback=lambda r, e: answers.append((r, e)),
        )
        reactor.run(until=lambda: bool(answers), deadline=time.monotonic() + 30)
        ((result, error),) = answers
        assert error is None
        body, frames = result
        assert body == {"n": 2}
        np.testing.assert_array_equal(unpack(frames), array * 2)
        assert server.stats["chunk_refused"] == 0
    finally:
        server.close()
        client.close()
        reactor.close()


def test_bad_chunks_are_counted_and_dropped() -> None:
    reactor = Reactor()
    router = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    dealer = make_socket(zmq.DEALER, connect=router.getsockopt_string(zmq.LAST_ENDPOINT))
    seen: list[Call] = []
    server = Channel(reactor, router, {"x": seen.append})
    server.enable_chunks(max_value_bytes=1 << 20)
    try:
        over = {"id": 1, "seq": 0, "sizes": [64 << 20]}  # announced over the limit
        dealer.send_multipart([encode(Kind.EVENT, CHUNK, 0, over), b"x"])
        dealer.send_multipart([encode(Kind.EVENT, CHUNK, 0, {"id": 2, "seq": 3}), b"x"])
        header = {"id": 3, "seq": 0, "sizes": [len(packb(1))]}
        dealer.send_multipart([encode(Kind.EVENT, CHUNK, 0, header), packb(1)])
        deadline = time.monotonic() + 10
        reactor.run(until=lambda: server.stats["malformed"] >= 1, deadline=deadline)
        assert server.stats["chunk_refused"] == 2
        assert server.stats["malformed"] == 1  # rebuilt, but not an envelope
        assert not seen
    finally:
        server.close()
        close_socket(dealer)
        reactor.close()


def test_batches_keep_a_big_value_alone() -> None:
    small = [b"s" * 1000]
    big = [b"b" * (CHUNK_THRESHOLD + 1)]
    entries = [("a", small), ("b", small), ("c", big), ("d", small)]
    batches = [[name for name, _ in batch] for batch in split_batch(entries, lambda e: e[1])]
    assert batches == [["a", "b"], ["c"], ["d"]]
    assert list(split_batch(entries[:2], lambda e: e[1])) == [entries[:2]]
    assert list(split_batch([], lambda e: e)) == []
    assert is_big([b"x" * CHUNK_THRESHOLD, b"y"]) and not is_big([b"x" * CHUNK_THRESHOLD])
