"""The limits that are config keys: leases per client, a metastore value's size, the
nesting depth of a decoded message. Each refusal is a clear error reply, and the
process goes on serving."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
import zmq

import zdf
from tests.security.checks import nested
from zdf.config import ConfigError, MasterConfig, MetastoreConfig, load_config
from zdf.errors import LimitExceeded, ProtocolError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster
from zdf.metastore import access
from zdf.metastore.client import MetaClient
from zdf.metastore.commands import Put, Txn
from zdf.metastore.lease_owners import LeaseOwners
from zdf.metastore.process import MetastoreProcess
from zdf.wire import codec
from zdf.wire.codec import Kind, decode, encode

pytestmark = pytest.mark.timeout(60)


def test_leases_are_counted_per_client_until_they_are_gone() -> None:
    owners = LeaseOwners(limit=2)
    live = {1, 2, 3}
    for lease in (1, 2):
        owners.check("client", b"a", live)
        owners.granting("client", b"a")({"op": "lease_grant", "id": lease})
    with pytest.raises(LimitExceeded, match="max-leases-per-client"):
        owners.check("client", b"a", live)
    with pytest.raises(LimitExceeded):
        owners.check(None, b"a", live)  # protected mode: counted too
    owners.check("client", b"b", live)  # another client
    owners.check("master", b"a", live)  # a master holds one lease per executor
    in_flight = owners.granting("client", b"b")  # proposed, not applied yet: counted
    owners.granting("client", b"b")(None)  # a grant that failed counts no more
    owners.check("client", b"b", live)
    unanswered = owners.granting("client", b"b")
    with pytest.raises(LimitExceeded):
        owners.check("client", b"b", live)
    unanswered(None)
    in_flight({"op": "lease_grant", "id": 3})
    owners.check("client", b"a", {2, 3})  # lease 1 is gone (revoked or expired)
    owners.sweep({3})
    assert owners.of_client == {b"b": {3}}


def test_values_outside_the_framework_keys_are_bounded() -> None:
    access.check_values(Put(b"/app/a", b"x" * 100), 100)
    access.check_values(Put(b"/zdf/framework/specs/j/0", b"x" * 500), 100)
    for command in (
        Put(b"/app/a", b"x" * 101),
        Txn((), (Put(b"/app/ok", b""),), (Put(b"/other", b"x" * 101),)),
    ):
        with pytest.raises(LimitExceeded, match="max-meta-value-bytes"):
            access.check_values(command, 100)


def test_the_limits_are_validated_config_keys() -> None:
    config = load_config(MetastoreConfig, data={})
    assert (config.max_message_depth, config.max_leases_per_client) == (32, 1000)
    assert config.max_meta_value_bytes == 1 << 20
    assert load_config(MasterConfig, data={"max-message-depth": 16}).max_message_depth == 16
    for bad in (
        {"max-message-depth": 15},
        {"max-message-depth": 257},
        {"max-leases-per-client": 0},
        {"max-meta-value-bytes": (1 << 20) + 1},
        {"max-meta-value-bytes": "1MiB"},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config(MetastoreConfig, data=bad)


def test_the_depth_limit_is_the_processs_own() -> None:
    try:
        codec.set_max_depth(20)
        assert decode(encode(Kind.REQUEST, "x", 3, nested(20))).body == nested(20)
        with pytest.raises(ProtocolError, match="nested more than 20 deep") as info:
            decode(encode(Kind.REQUEST, "x", 3, nested(21)))
        assert info.value.data["rid"] == 3
        with pytest.raises(ValueError):
            codec.set_max_depth(1000)
    finally:
        codec.set_max_depth(codec.DEFAULT_MAX_DEPTH)


def raw_call(addr: str, op: str, body: Any) -> Any:
    """One request from a plain socket (the metastore here is unsecured, loopback)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://{addr}")
        sock.send(encode(Kind.REQUEST, op, 9, body))
        assert sock.poll(5000), "no answer"
        return decode(sock.recv())
    finally:
        sock.close(0)


def test_a_metastore_refuses_what_is_over_its_limits_and_keeps_serving(tmp_path: Path) -> None:
    meta = MetastoreProcess(
        str(tmp_path / "meta"),
        log_path=str(tmp_path / "meta.log"),
        extra_args=[
            "--max-leases-per-client",
            "3",
            "--max-meta-value-bytes",
            "2048",
            "--max-message-depth",
            "16",
            "--security-dir",
            "",
        ],
    )
    try:
        meta.start()
        # nesting: 16 deep is answered, 17 deep is an error reply naming the limit
        answer = raw_call(meta.addr, "status", nested(16))
        assert answer.kind is Kind.REPLY and answer.rid == 9
        answer = raw_call(meta.addr, "status", nested(17))
        assert answer.kind is Kind.ERROR and answer.rid == 9
        assert "nested more than 16 deep (max-message-depth)" in str(answer.body)
        with MetaClient(meta.addr, timeout=5.0) as one, MetaClient(meta.addr, timeout=5.0) as two:
            # leases: three for one client, the fourth refused; others still get theirs
            leases = [one.lease_grant(60) for _ in range(3)]
            with pytest.raises(LimitExceeded, match="max-leases-per-client"):
                one.lease_grant(60)
            two.lease_grant(60)
            one.lease_revoke(leases[0])
            one.lease_grant(60)
            # a value: 2048 bytes kept, 2049 refused, nothing of it written
            one.put("/app/v", b"x" * 2048)
            with pytest.raises(LimitExceeded, match="max-meta-value-bytes"):
                one.put("/app/w", b"x" * 2049)
            assert one.get("/app/w") is None
            assert one.get("/app/v").value == b"x" * 2048
            assert one.status()["leases"] == 4
    finally:
        meta.kill()


@pytest.mark.timeout(120)
@pytest.mark.cluster(executors=1, workers=1, extra_env={"ZDF_MAX_QUEUED_FN_PER_CLIENT": "3"})
def test_a_client_over_its_queue_limit_gets_the_error_on_its_futures(
    cluster: LocalCluster,
) -> None:
    """``zdf.connect`` submits one-way: a refused batch must fail its futures with the
    limit's error, not leave them waiting."""
    with zdf.connect(cluster.master_addr) as client:
        futures = [client.submit(examples.hold, 3.0) for _ in range(8)]
        _, waiting = concurrent.futures.wait(futures, timeout=60)
        assert not waiting
        errors = [str(f.exception()) for f in futures if f.exception() is not None]
        assert errors and all("max-queued-fn-per-client" in e for e in errors), errors
        assert all(f.result() == 3.0 for f in futures if f.exception() is None)
        assert client.submit(examples.square, 7).result(30) == 49  # and it goes on
