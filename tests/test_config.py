from pathlib import Path

import pytest

from zdf.config import ExecutorConfig, MasterConfig, MetastoreConfig, load_config, parse_duration
from zdf.errors import ConfigError


@pytest.mark.parametrize(
    "text, seconds",
    [("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), (10, 10.0), ("1.5s", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["fast", "-1s", "10 parsecs", True, ""])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, 'master-addr = "127.0.0.1:1000"\nkeepalive-ttl = "3s"\nname = "m1"\n')
    env = {"ZDF_KEEPALIVE_TTL": "4s", "ZDF_NAME": "from-env"}
    cfg = load_config(MasterConfig, path, {"name": "from-flag", "rpc-timeout": None}, env)
    assert cfg.master_addr == "127.0.0.1:1000"
    assert cfg.keepalive_ttl == 4.0
    assert cfg.name == "from-flag"
    assert cfg.rpc_timeout == 5.0


def test_original_prototype_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'join = "127.0.0.1:10240"\nworker-addr = "127.0.0.1:10241"\nkeepalive-ttl = "10s"\n'
        'keepalive-interval = "500ms"\nmeta-endpoints = "127.0.0.1:10340"\nsession-ttl = 10\n',
    )
    cfg = load_config(ExecutorConfig, path, env={})
    assert cfg.join == ["127.0.0.1:10240"] and cfg.session_ttl == 10.0
    assert cfg.keepalive_interval == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'keepalive-ttl = "soon"',
            "c.toml: key 'keepalive-ttl': expected a duration such as '500ms' or '10s', got 'soon'",
        ),
        ("slots = 0", "c.toml: key 'slots': expected an integer from 1 to 4096, got 0"),
        (
            'worker-addr = "localhost"',
            "c.toml: key 'worker-addr': expected an address host:port with a port"
            " from 1 to 65535, got 'localhost'",
        ),
        ("colour = 1", "c.toml: unknown key 'colour' (allowed: "),
        ("slots = [", "c.toml: not valid TOML: "),
        (
            'keepalive-interval = "2s"\nkeepalive-ttl = "1s"',
            "c.toml: key 'keepalive-interval': must be shorter than 'keepalive-ttl'",
        ),
    ],
)
def test_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(ExecutorConfig, path, env={})
    assert "\n" not in info.value.message
    assert info.value.message.startswith(path + ": ")
    assert message.split(": ", 1)[1] in info.value.message


def test_env_value_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment ZDF_SLOTS: key 'slots'"):
        load_config(ExecutorConfig, None, env={"ZDF_SLOTS": "many"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(MasterConfig, "nope.toml", env={})


def test_metastore_cluster_checks(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "a"\ninitial-cluster = "a=127.0.0.1:1,b=127.0.0.1:2"\n')
    with pytest.raises(ConfigError, match=r"1, 3 or 5 replicas"):
        load_config(MetastoreConfig, path, env={})
    path = write(tmp_path, 'name = "z"\ninitial-cluster = "a=127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="does not name this replica"):
        load_config(MetastoreConfig, path, env={})


def test_sizes_and_the_memory_limit_parse_as_documented() -> None:
    from zdf.config import parse_memory_limit, parse_size

    assert parse_size("2GiB") == 2 << 30 and parse_size("1.5GB") == 1_500_000_000
    assert parse_size("512MiB") == 512 << 20 and parse_size(4096) == 4096
    for bad in ("x", "-1", True, "2XB"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_memory_limit("auto") == 0 and parse_memory_limit("2GiB") == 2 << 30
    with pytest.raises(ValueError, match="at least 1MiB"):
        parse_memory_limit("10k")
    assert MasterConfig().max_value_bytes == 1 << 30
    assert ExecutorConfig().memory_limit == 0
