"""In-process routes: a socket bound here is reached over inproc by sockets of this process."""

from __future__ import annotations

import pytest
import zmq

from zdf.wire import inproc
from zdf.wire.sockets import close_socket, make_socket

pytestmark = pytest.mark.timeout(20)


def test_a_bound_address_routes_to_its_alias_until_dropped() -> None:
    server = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    addr = server.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    try:
        assert inproc.route(addr) == addr
        assert inproc.bind_alias(server) == addr
        alias = inproc.route(addr)
        assert alias.startswith("inproc://")
        client = make_socket(zmq.DEALER, connect=alias)
        try:
            client.send(b"over inproc")
            assert server.poll(5000)
            assert server.recv_multipart()[1] == b"over inproc"
        finally:
            close_socket(client)
        inproc.drop_alias(addr)
        assert inproc.route(addr) == addr
    finally:
        inproc.drop_alias(addr)
        close_socket(server)


def test_a_forked_child_does_not_inherit_the_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_socket(zmq.ROUTER, bind="tcp://127.0.0.1:*")
    addr = server.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    try:
        assert inproc.bind_alias(server) == addr
        assert inproc.route(addr) != addr
        monkeypatch.setattr(inproc.os, "getpid", lambda: -1)  # as seen from another pid
        assert inproc.route(addr) == addr
    finally:
        monkeypatch.undo()
        inproc.drop_alias(addr)
        close_socket(server)
