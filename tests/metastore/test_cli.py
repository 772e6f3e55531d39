"""``zdf meta ...`` and ``zdf metastore`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zdf.metastore.process import MetastoreProcess
from zdf.wire.sockets import free_port


def zdf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def meta_json(server: MetastoreProcess, *args: str) -> object:
    done = zdf("meta", *args, "--endpoints", server.addr, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_meta_commands_json(server: MetastoreProcess) -> None:
    assert meta_json(server, "get", "app/x") is None
    assert meta_json(server, "put", "app/x", "hello") == {"revision": 1}
    meta_json(server, "put", "app/y", "world")
    got = meta_json(server, "get", "app/x")
    assert isinstance(got, dict)
    assert (got["key"], got["value"], got["mod_revision"]) == ("app/x", "hello", 1)
    listed = meta_json(server, "range", "app/")
    assert isinstance(listed, list)
    assert [kv["key"] for kv in listed] == ["app/x", "app/y"]
    status = meta_json(server, "status")
    assert isinstance(status, dict)
    assert status["leader"] == "meta-1" and status["term"] == 1 and status["members"]
    assert meta_json(server, "del", "app/", "--prefix") == {"deleted": 2}


def test_meta_table_output(server: MetastoreProcess) -> None:
    zdf("meta", "put", "k", "v", "--endpoints", server.addr)
    done = zdf("meta", "get", "k", "--endpoints", server.addr)
    assert done.returncode == 0 and "k" in done.stdout
    status = zdf("meta", "status", "--endpoints", server.addr)
    assert status.returncode == 0 and "meta-1" in status.stdout


def test_meta_errors_are_one_line() -> None:
    done = zdf("meta", "get", "k", "--endpoints", f"127.0.0.1:{free_port()}", "--timeout", "0.3")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")
    bad = zdf("meta", "status", "--endpoints", "nonsense")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_metastore_config_error_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text('addr = "127.0.0.1:10340"\nbogus-key = 1\n')
    done = zdf("metastore", "--config", str(config))
    assert done.returncode == 2
    assert "bogus-key" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    two = "meta-1=127.0.0.1:1,b=127.0.0.1:2"
    cluster = zdf(
        "metastore",
        "--initial-cluster",
        two,
        "--addr",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert cluster.returncode == 2 and "1, 3 or 5 replicas" in cluster.stderr


def test_metastore_cannot_share_an_address_or_data_dir(
    server: MetastoreProcess, tmp_path: Path
) -> None:
    taken = zdf("metastore", "--addr", server.addr, "--data-dir", str(tmp_path / "other"))
    assert taken.returncode == 1 and "cannot listen" in taken.stderr
    locked = zdf("metastore", "--addr", f"127.0.0.1:{free_port()}", "--data-dir", server.data_dir)
    assert locked.returncode == 1 and "cannot open" in locked.stderr
    assert len(locked.stderr.strip().splitlines()) == 1
