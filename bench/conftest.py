"""Shared pieces of the benchmarks: a generous timeout and the raw pyzmq baselines.

``raw_echo`` is a plain echo: a baseline for plain sockets. A benchmark whose
cluster is secured (``LocalCluster`` is, by default) has CURVE keys installed in
its process, so ``make_socket`` there makes CURVE clients that never finish a
handshake with a plain echo; and the fair floor for an encrypted path is an
encrypted echo anyway: ``curve_echo`` gives one (raw pyzmq, CURVE on both ends,
keys of its own).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import zmq

from zdf.wire.sockets import free_port

RAW_ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
s.bind(sys.argv[1])
while True:
    s.send_multipart(s.recv_multipart())
"""


RAW_CURVE_ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
s.curve_server = True
s.curve_secretkey = sys.stdin.readline().strip().encode()  # not on the command line
s.bind(sys.argv[1])
while True:
    s.send_multipart(s.recv_multipart())
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="module")
def raw_echo() -> Iterator[str]:
    """A raw pyzmq ROUTER echo in its own process: the floor for any round trip."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", RAW_ECHO, addr])
    try:
        yield addr
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def curve_echo() -> Iterator[Callable[[], zmq.Socket[bytes]]]:
    """A raw pyzmq ROUTER echo with CURVE in its own process: the floor for a round
    trip on encrypted sockets. Yields a function that makes a raw DEALER connected
    to it (CURVE, a fresh client key; closed with the fixture)."""
    addr = f"tcp://127.0.0.1:{free_port()}"
    public, secret = zmq.curve_keypair()
    proc = subprocess.Popen([sys.executable, "-c", RAW_CURVE_ECHO, addr], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(secret + b"\n")
    proc.stdin.close()
    ctx = zmq.Context()
    sockets: list[zmq.Socket[bytes]] = []

    def connect() -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvtimeo = 10_000  # a lost echo fails the benchmark, it does not hang it
        sock.curve_serverkey = public
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.connect(addr)
        sockets.append(sock)
        return sock

    try:
        yield connect
    finally:
        for sock in sockets:
            sock.close(0)
        ctx.term()
        proc.kill()
        proc.wait()
