"""CURVE keys, the ZAP allow-list, roles per operation and protected mode (zdf.wire.security)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from zdf.errors import ConfigError, PermissionDenied, Timeout
from zdf.wire import Channel, Reactor, RpcClient, make_socket, security
from zdf.wire.codec import Kind, encode
from zdf.wire.sockets import context, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[str]:
    """A security dir; the process's own keys are put back as they were afterwards."""
    outer = (security.current(), security.is_insecure())
    directory = str(tmp_path / "keys")
    security.init_dir(directory)
    yield directory
    security.install(outer[0], insecure=outer[1])


def test_init_writes_private_keys_and_rotate_replaces_one_role(keys: str) -> None:
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    for role in security.ROLES:
        assert stat.S_IMODE(os.stat(os.path.join(keys, role + ".key_secret")).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.join(keys, role + ".key")).st_mode) == 0o644
    before = {role: security.load(keys, role).public_key for role in security.ROLES}
    assert security.init_dir(keys) == []  # kept as they are
    security.init_dir(keys, ("executor",), rotate=True)
    after = {role: security.load(keys, role).public_key for role in security.ROLES}
    assert after["executor"] != before["executor"]
    assert {r: k for r, k in after.items() if r != "executor"} == {
        r: k for r, k in before.items() if r != "executor"
    }


def test_a_secret_readable_by_others_or_a_missing_dir_is_one_line(keys: str) -> None:
    os.chmod(os.path.join(keys, "master.key_secret"), 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        security.load(keys, "master")
    with pytest.raises(ConfigError, match="does not exist"):
        security.load(keys + "-nope", "client")


class Server:
    """A ROUTER channel of the master role: 'who' for clients, 'admin' for masters only."""

    def __init__(self) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.reactor = Reactor()
        roles = {"who": frozenset({"client", "master"}), "admin": frozenset({"master"})}
        handlers = {"who": lambda call: call.role, "admin": lambda call: "done"}
        sock = make_socket(zmq.ROUTER, bind=self.addr)
        self.channel = Channel(self.reactor, sock, handlers, roles=roles)
        self.thread = threading.Thread(target=self.reactor.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.reactor.stop()
        self.thread.join(5)
        self.channel.close()


@pytest.fixture
def server(keys: str) -> Iterator[Server]:
    security.install(security.load(keys, "master"))
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


def test_each_operation_checks_the_callers_role(keys: str, server: Server) -> None:
    assert server.channel.secured
    security.install(security.load(keys, "client"))
    with RpcClient(server.addr, timeout=5.0) as client:
        assert client.call("who") == "client"
        with pytest.raises(PermissionDenied, match="'admin' is not for role 'client'"):
            client.call("admin")
    security.install(security.load(keys, "master"))
    with RpcClient(server.addr, timeout=5.0) as client:
        assert client.call("admin") == "done"


def test_a_socket_without_keys_or_with_unknown_keys_gets_nothing_through(
    keys: str, server: Server, tmp_path: Path
) -> None:
    plain = context().socket(zmq.DEALER)
    plain.linger = 0
    try:
        plain.connect(f"tcp://{server.addr}")
        plain.send(encode(Kind.REQUEST, "who", 1, None))
        assert not plain.poll(500)
    finally:
        plain.close(0)
    other = str(tmp_path / "other-keys")
    security.init_dir(other)
    security.install(security.load(other, "master"))  # a master of another cluster
    with RpcClient(server.addr, timeout=0.5) as client, pytest.raises(Timeout):
        client.call("admin")
    assert server.channel.stats["refused"] == 0  # refused at the handshake, before any op


def test_a_client_refuses_a_server_that_lacks_the_expected_roles_key(
    keys: str, server: Server
) -> None:
    security.install(security.load(keys, "client"))
    with (
        RpcClient(server.addr, timeout=0.5, server_role="metastore") as client,
        pytest.raises(Timeout),
    ):
        client.call("who")


def test_protected_mode_binds_loopback_only_unless_insecure() -> None:
    outer = (security.current(), security.is_insecure())
    try:
        security.install(None)
        security.check_bind("tcp://127.0.0.1:5")
        security.check_bind("ipc:///tmp/x")
        with pytest.raises(ConfigError, match="without a security dir"):
            security.check_bind("tcp://0.0.0.0:5")
        with pytest.raises(ConfigError, match="not an IP address"):
            security.check_bind("tcp://no.such.host:5")
        security.install(None, insecure=True)
        security.check_bind("tcp://0.0.0.0:5")
    finally:
        security.install(outer[0], insecure=outer[1])


def test_a_master_on_a_public_address_without_keys_stops_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "ZDF_SECURITY_DIR": ""}
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zdf.cli.main",
            "master",
            "--master-addr",
            f"0.0.0.0:{port}",
            "--advertise-addr",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "m"),
            "--meta-endpoints",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert "without a security dir" in out.stderr


def test_security_init_command(tmp_path: Path) -> None:
    directory = str(tmp_path / "k")
    cmd = [sys.executable, "-m", "zdf.cli.main", "security", "init", directory]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(directory)) == sorted(
        f"{r}{ext}" for r in security.ROLES for ext in (".key", ".key_secret")
    )
