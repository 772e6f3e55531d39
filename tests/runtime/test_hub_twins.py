"""A hub's ipc:// twin (zdf.runtime.hubaddr): peers on its host dial ipc://, others tcp://,
and a dead peer's socket file is never dialed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from runtime.test_pipe import Sink, Source, run_until, settle
from zdf.localcluster import wait_until
from zdf.runtime import hub, hubaddr
from zdf.runtime.hubaddr import HubAddress
from zdf.wire import Reactor, security
from zdf.wire.addresses import advertised
from zdf.wire.hostid import host_identity
from zdf.wire.sockets import context

pytestmark = pytest.mark.timeout(30)

SENDER = os.path.join(os.path.dirname(__file__), "twin_sender.py")


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    yield Reactor()


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A private directory with a short path (a Unix socket path is at most 107 bytes)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="zdf-twin-")
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


class Sender:
    """A sending port in a process of its own (tests/runtime/twin_sender.py)."""

    def __init__(self, spec: str, total: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SENDER, spec, str(total)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.addr = self.proc.stdout.readline().strip()  # the child prints it first
        assert self.addr, f"the sender exited with {self.proc.poll()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def test_an_address_with_a_twin_survives_publishing() -> None:
    odd = "/tmp/a dir#with&odd=chars?/x:y.sock"
    address = HubAddress("tcp://0.0.0.0:4321", odd, "9c41")
    assert hubaddr.parse(str(address)) == address
    pipe = f"{address}#17"
    url, port = hub.split(pipe)
    assert (hubaddr.parse(url), port) == (address, b"17")
    public = advertised(pipe, "10.0.0.2")
    assert hubaddr.parse(hub.split(public)[0]) == HubAddress("tcp://10.0.0.2:4321", odd, "9c41")
    assert hubaddr.parse("ipc:///x/y.sock") == HubAddress("ipc:///x/y.sock")


def test_the_twin_is_dialed_only_on_its_own_host_while_it_listens(sock_dir: str) -> None:
    live = os.path.join(sock_dir, "live.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(live)
    listener.listen(1)
    stale = os.path.join(sock_dir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)  # the file stays after close, as a killed process's does
    dead.close()
    tcp = "tcp://127.0.0.1:4321"
    here = host_identity()
    try:
        assert here, "this test runs on Linux, where /proc names the host"
        assert hubaddr.choose(str(HubAddress(tcp, live, here))) == (f"ipc://{live}", "ipc")
        assert hubaddr.choose(str(HubAddress(tcp, live, "another"))) == (tcp, "tcp")
        assert hubaddr.choose(str(HubAddress(tcp, stale, here))) == (tcp, "tcp")
        assert hubaddr.choose(str(HubAddress(tcp, live + ".gone", here))) == (tcp, "tcp")
        assert hubaddr.choose(str(HubAddress(tcp, live, ""))) == (tcp, "tcp")
        assert hubaddr.choose(tcp) == (tcp, "tcp")
    finally:
        listener.close()


def test_a_twin_in_this_process_is_reached_over_inproc(
    reactor: Reactor, no_leaks: None, sock_dir: str
) -> None:
    src = Source(reactor, total=5, where=hubaddr.twin_spec("tcp://127.0.0.1:*", sock_dir))
    dst = Sink(reactor, window=2)
    try:
        address = hubaddr.parse(hub.split(src.port.addr)[0])
        assert address.primary.startswith("tcp://127.0.0.1:") and address.host == host_identity()
        assert os.path.dirname(address.ipc_path) == sock_dir
        dst.port.connect(advertised(src.port.addr, "127.0.0.2"))  # even with another host
        assert dst.port.transport == "inproc"
        run_until(reactor, lambda: src.eos_acked)
        assert [p for p, _ in dst.batches] == list(range(5))
    finally:
        dst.port.close()
        src.port.close()
    # (libzmq's I/O thread unlinks it once the socket is reaped)
    wait_until(lambda: not os.listdir(sock_dir), 5, "the twin's socket file goes with its hub")


def test_without_its_directory_a_hub_binds_tcp_alone(
    reactor: Reactor, no_leaks: None, sock_dir: str
) -> None:
    gone = os.path.join(sock_dir, "removed")
    src = Source(reactor, total=3, where=hubaddr.twin_spec("tcp://127.0.0.1:*", gone))
    dst = Sink(reactor, window=2)
    try:
        assert hubaddr.parse(hub.split(src.port.addr)[0]).ipc_path == ""
        assert src.port.addr.startswith("tcp://127.0.0.1:")
        dst.port.connect(src.port.addr)
        run_until(reactor, lambda: src.eos_acked)
        assert [p for p, _ in dst.batches] == [0, 1, 2]
    finally:
        dst.port.close()
        src.port.close()


def test_a_peer_process_on_this_host_is_dialed_over_ipc(
    reactor: Reactor, no_leaks: None, sock_dir: str
) -> None:
    sender = Sender(hubaddr.twin_spec("tcp://127.0.0.1:*", sock_dir), total=50)
    dst = Sink(reactor, window=4)
    try:
        dst.port.connect(sender.addr)
        assert dst.port.transport == "ipc"
        run_until(reactor, lambda: dst.ended_at is not None, timeout=20)
        pks = np.concatenate([b["pk"] for _, b in dst.batches])
        assert (pks == np.arange(500)).all()
    finally:
        dst.port.close()
        sender.stop()


def test_a_dead_peers_socket_file_does_not_hang_the_dialer(
    reactor: Reactor, no_leaks: None, sock_dir: str, tmp_path: Path
) -> None:
    """A sender killed -9 leaves its socket file; a pipe given its old address dials
    its tcp:// address instead (refused at once, as a dead peer's is), stays usable,
    and moves to the task's next address when told."""
    dead = Sender(hubaddr.twin_spec("tcp://127.0.0.1:*", sock_dir), total=10)
    dead.kill()
    stale = hubaddr.parse(hub.split(dead.addr)[0]).ipc_path
    assert os.path.exists(stale), "a killed process leaves its socket file behind"
    alive = Sender(hubaddr.twin_spec("tcp://127.0.0.1:*", sock_dir), total=10)
    dst = Sink(reactor, window=2)
    try:
        started = time.monotonic()
        dst.port.connect(dead.addr)
        assert dst.port.transport == "tcp"
        ticks = []
        reactor.call_later(0.05, lambda: ticks.append(1))
        run_until(reactor, lambda: bool(ticks), timeout=2)  # the reactor goes on turning
        assert time.monotonic() - started < 1.0
        dst.port.connect(alive.addr)  # the task's new address
        assert dst.port.transport == "ipc"
        run_until(reactor, lambda: dst.ended_at == 10, timeout=20)
        assert [p for p, _ in dst.batches] == list(range(10))
    finally:
        dst.port.close()
        alive.stop()
        dead.kill()


def test_a_secured_hubs_tcp_endpoint_is_curve_and_its_twin_plain(
    reactor: Reactor, sock_dir: str, tmp_path: Path
) -> None:
    """With keys installed the hub's tcp:// endpoint lets in only CURVE peers with a known
    key; its ipc:// twin is plain (the socket directory keeps other users out). (No
    leak check: the ZAP handler's sockets live as long as the process.)"""
    outer = (security.current(), security.is_insecure())
    keys = str(tmp_path / "keys")
    security.init_dir(keys)
    security.install(security.load(keys, "executor"))
    ctx = security.current()
    assert ctx is not None
    src = Source(reactor, total=1, where=hubaddr.twin_spec("tcp://127.0.0.1:*", sock_dir))
    address = hubaddr.parse(hub.split(src.port.addr)[0])
    stats = src.port.hub.stats
    dealers = []

    def dealer(url: str, curve: bool) -> None:
        sock = context().socket(zmq.DEALER)
        sock.linger = 0
        dealers.append(sock)
        if curve:
            sock.curve_secretkey, sock.curve_publickey = ctx.secret_key, ctx.public_key
            sock.curve_serverkey = ctx.public_key  # the executor role's own key
        sock.connect(url)
        sock.send_multipart([b"999", b"1", b"to a port that is not there"])

    try:
        dealer(address.primary, curve=True)
        run_until(reactor, lambda: stats["unknown"] == 1)
        dealer(address.twin, curve=False)
        run_until(reactor, lambda: stats["unknown"] == 2)
        dealer(address.primary, curve=False)
        settle(reactor, turns=50)  # long enough for a plain handshake to be refused
        assert stats["unknown"] == 2
    finally:
        for sock in dealers:
            sock.close(0)
        src.port.close()
        security.install(outer[0], insecure=outer[1])
