"""The files in deploy/ are what docs/deploy.md says: configs that load, units that
run the processes with them."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from zdf.config import ExecutorConfig, MasterConfig, MetastoreConfig, load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@pytest.mark.parametrize(
    ("name", "cls"),
    [("metastore", MetastoreConfig), ("master", MasterConfig), ("executor", ExecutorConfig)],
)
def test_configs_load_and_advertise_routable_addresses(name: str, cls: type) -> None:
    config = load_config(cls, str(DEPLOY / f"{name}.toml"), env={})
    assert config.public_addr.startswith("10.0.0.")  # type: ignore[attr-defined]
    # what docs/deploy.md's "What to watch" scrapes: on the host's own address
    assert config.http_addr.startswith("10.0.0.")  # type: ignore[attr-defined]
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(DEPLOY / f"zdf-{name}.service")
    start = unit["Service"]["ExecStart"]
    assert f"zdf {name} --config /etc/zdf/{name}.toml" in start
    assert unit["Service"]["User"] == "zdf"


def test_executor_knows_both_masters_and_the_metastore() -> None:
    config = load_config(ExecutorConfig, str(DEPLOY / "executor.toml"), env={})
    assert len(config.join) == 2 and len(config.meta_endpoints) == 3
