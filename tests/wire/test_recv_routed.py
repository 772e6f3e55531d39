"""recv_routed: a ROUTER's message, whole, as recv_multipart gives it."""

from __future__ import annotations

import pytest
import zmq

from zdf.wire.sockets import close_socket, free_port, make_socket, recv_routed

pytestmark = pytest.mark.timeout(30)


def test_recv_routed_reads_whole_messages_and_raises_again_when_none_waits() -> None:
    addr = f"127.0.0.1:{free_port()}"
    router = make_socket(zmq.ROUTER, bind=addr)
    dealer = make_socket(zmq.DEALER, connect=addr, identity=b"me")
    try:
        with pytest.raises(zmq.Again):
            recv_routed(router)
        sent = [[b"one"], [b""], [b"a", b"b", b"c"], [b"last"]]
        for message in sent:
            dealer.send_multipart(message)
        got = []
        for _ in sent:
            assert router.poll(5000), "nothing arrived"
            got.append(recv_routed(router))
        assert got == [[b"me", *message] for message in sent]
        with pytest.raises(zmq.Again):
            recv_routed(router)
    finally:
        close_socket(dealer)
        close_socket(router)
