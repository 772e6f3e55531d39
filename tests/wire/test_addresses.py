"""Bound and advertised addresses (DESIGN.md "Several hosts")."""

from __future__ import annotations

import pytest

from zdf.config import ExecutorConfig, MasterConfig, MetastoreConfig, load_config
from zdf.errors import ConfigError
from zdf.wire.addresses import advertised, host_of, is_loopback, is_wildcard


def test_helpers() -> None:
    assert host_of("10.0.0.2:10240") == "10.0.0.2"
    assert host_of("tcp://0.0.0.0:4455") == "0.0.0.0"
    assert is_wildcard("0.0.0.0:1") and not is_wildcard("10.0.0.2:1")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("10.77.0.2") and not is_loopback("db.example")
    assert advertised("tcp://0.0.0.0:4455", "10.0.0.2") == "tcp://10.0.0.2:4455"
    assert advertised("ipc:///tmp/x.sock", "10.0.0.2") == "ipc:///tmp/x.sock"
    assert advertised("tcp://10.0.0.9:1", "") == "tcp://10.0.0.9:1"


@pytest.mark.parametrize(
    ("cls", "data", "twin"),
    [
        (MasterConfig, {"master-addr": "0.0.0.0:10240"}, "advertise-addr"),
        (MasterConfig, {"heartbeat-addr": "0.0.0.0:10250"}, "advertise-heartbeat-addr"),
        (ExecutorConfig, {"worker-addr": "0.0.0.0:10241"}, "advertise-addr"),
        (MetastoreConfig, {"addr": "0.0.0.0:10340"}, "advertise-addr"),
        (MetastoreConfig, {"peer-addr": "0.0.0.0:10380"}, "advertise-peer-addr"),
    ],
)
def test_a_wildcard_bind_needs_its_twin(cls: type, data: dict[str, str], twin: str) -> None:
    with pytest.raises(ConfigError, match=twin):
        load_config(cls, data=data, env={})
    load_config(cls, data={**data, twin: "10.0.0.2:7000"}, env={})  # with it: accepted


def test_advertised_addresses_are_what_others_dial() -> None:
    master = load_config(
        MasterConfig,
        data={"master-addr": "0.0.0.0:10240", "advertise-addr": "10.0.0.2:10240"},
        env={},
    )
    assert (master.master_addr, master.public_addr) == ("0.0.0.0:10240", "10.0.0.2:10240")
    assert master.public_heartbeat_addr == master.heartbeat_addr  # no twin: the bind
    executor = load_config(
        ExecutorConfig,
        data={"worker-addr": "0.0.0.0:10241", "advertise-addr": "10.0.0.3:10241", "join": ""},
        env={},
    )
    assert executor.executor_id == "exec-10.0.0.3-10241"
    assert executor.join == []  # the masters come from the metastore
    with pytest.raises(ConfigError, match="advertise-addr"):
        load_config(ExecutorConfig, data={"advertise-addr": "0.0.0.0:1"}, env={})
    meta = load_config(
        MetastoreConfig,
        data={"peer-addr": "0.0.0.0:10380", "advertise-peer-addr": "10.0.0.4:10380"},
        env={},
    )
    assert meta.cluster == {"meta-1": "10.0.0.4:10380"}
