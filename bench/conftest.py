"""Shared pieces of the benchmarks: a generous timeout and the raw pyzmq baselines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from zdf.wire.sockets import free_port

RAW_ECHO = """
import sys, zmq
s = zmq.Context().socket(zmq.ROUTER)
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
