"""free_port: below the ephemeral range, and never the same port twice in a row of draws."""

from __future__ import annotations

import socket

from zdf.wire.sockets import FREE_PORT_RANGE, free_port


def test_a_process_never_gets_the_same_port_twice_lately() -> None:
    # A cluster draws dozens of ports before it binds any: with random draws from
    # about 12,000 ports, two equal draws in one test were a matter of time.
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)
    assert all(FREE_PORT_RANGE[0] <= p <= FREE_PORT_RANGE[1] for p in ports)


def test_the_port_is_free_to_bind() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
