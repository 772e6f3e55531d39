"""Validation, limits and safe files (issue 15, items 8-14), for everyone, secured or not."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.security.checks import nested, one_line_error
from zdf import protocol as P
from zdf.config import ConfigError, parse_name, read_toml
from zdf.errors import LimitExceeded, PermissionDenied, ProtocolError
from zdf.executor.fnrunner import PICKLE_REFUSED_BY_MASTER, direct_path
from zdf.files import check_name, open_nofollow, private_dir, write_file
from zdf.jobs.function import build_function_job
from zdf.jobs.spec import JobSpec
from zdf.master.access import validate_registration
from zdf.master.limits import TasksByClient, check_job
from zdf.metastore import access
from zdf.metastore.commands import Delete, LeaseGrant, Put, Txn
from zdf.metastore.process import MetastoreProcess
from zdf.runtime.bench.sinkfile import SinkFile
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(60)


def test_a_message_nested_too_deep_is_refused_with_its_request_id() -> None:
    assert decode(encode(Kind.REQUEST, P.PROGRESS, 7, nested(30))).body == nested(30)
    with pytest.raises(ProtocolError, match="nested") as info:
        decode(encode(Kind.REQUEST, P.PROGRESS, 7, {"counters": nested(1000)}))
    assert info.value.data["rid"] == 7
    with pytest.raises(ProtocolError, match="nested"):
        deep_list: Any = [1]
        for _ in range(40):
            deep_list = [deep_list]
        decode(encode(Kind.EVENT, P.PROGRESS, 0, deep_list))


def test_a_registration_with_a_bad_address_or_id_is_refused_whole() -> None:
    validate_registration({"executor_id": "exec-1", "addr": "127.0.0.1:9", "slots": 4})
    for bad in [
        {"executor_id": "exec-1", "addr": "nocolon", "slots": 4},
        {"executor_id": "exec-1", "addr": "127.0.0.1:0", "slots": 4},
        {"executor_id": "exec-1", "addr": "127.0.0.1:9", "slots": 100_000},
        {"executor_id": "a b", "addr": "127.0.0.1:9", "slots": 4},
    ]:
        with pytest.raises(ProtocolError):
            validate_registration(bad)


def test_queued_function_tasks_per_client_are_counted_and_bounded() -> None:
    tasks: TasksByClient[str] = TasksByClient()
    for tid in range(3):
        tasks[(b"c1", tid)] = "t"
    tasks[(b"c1", 0)] = "again"  # the same task again is not counted twice
    tasks[(b"c2", 0)] = "t"
    assert tasks.counts == {b"c1": 3, b"c2": 1}
    tasks.check_room(b"c1", 2, 5)
    with pytest.raises(LimitExceeded, match="max-queued-fn-per-client"):
        tasks.check_room(b"c1", 3, 5)
    tasks.pop((b"c1", 1))
    tasks.pop((b"c1", 1))
    assert tasks.counts[b"c1"] == 2
    tasks.check_room(b"c1", 3, 5)


def test_a_job_is_measured_in_full_before_it_is_kept() -> None:
    data = build_function_job(
        {
            "job-type": "function",
            "name": "big",
            "function": "zdf.jobs.examples:square",
            "tasks": 100,
            "args": [1],
        },
        "<test>",
    ).to_dict()
    spec = JobSpec.from_dict(data)
    check_job(data, spec, 1 << 20, 100)
    with pytest.raises(LimitExceeded, match="max-job-tasks"):
        check_job(data, spec, 1 << 20, 99)
    with pytest.raises(LimitExceeded, match="max-job-spec-bytes"):
        check_job(data, spec, 1024, 100)


def test_metastore_writes_are_checked_key_by_key_per_role() -> None:
    framework = Put(b"/zdf/framework/jobs/x", b"v")
    app = Put(b"/app/x", b"v")
    for cmd in (framework, app, Delete(b"/", prefix=True)):
        access.check_write("master", cmd)
        access.check_write(None, cmd)  # no CURVE: protected mode, unchecked
    access.check_write("client", app)
    for cmd in (
        framework,
        Delete(b"/zdf/", prefix=True),
        Delete(b"/", prefix=True),
        Txn((), (app,), (Put(b"/zdf/election/master", b"me"),)),
    ):
        with pytest.raises(PermissionDenied):
            access.check_write("client", cmd)
    with pytest.raises(PermissionDenied):
        access.check_write("executor", app)


def test_lease_limits_keep_room_for_the_master() -> None:
    month = LeaseGrant(1, 30 * 24 * 3600.0, 0.0)
    minute = LeaseGrant(1, 60.0, 0.0)
    access.check_lease("master", month, 0)
    access.check_lease("client", minute, 0, max_leases=100)
    with pytest.raises(LimitExceeded, match="TTL"):
        access.check_lease("client", month, 0)
    with pytest.raises(LimitExceeded):
        access.check_lease(None, minute, 100 - access.MASTER_LEASE_RESERVE, max_leases=100)
    access.check_lease("master", minute, 99, max_leases=100)


def test_the_lease_path_obeys_the_masters_allow_pickle() -> None:
    assert direct_path(P.PICKLED_FN, False) == PICKLE_REFUSED_BY_MASTER
    assert direct_path(P.PICKLED_FN, True) == P.PICKLED_FN
    assert direct_path("zdf.jobs.examples:square", False) == "zdf.jobs.examples:square"


def test_output_files_never_follow_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    for name in ("sink_0.bin", "summary.json"):
        os.symlink(target, tmp_path / name)
    with pytest.raises(OSError):
        SinkFile(str(tmp_path / "sink_0.bin"))
    with pytest.raises(OSError):
        write_file(str(tmp_path / "summary.json"), "{}")
    assert target.read_text() == "keep me"
    fd = open_nofollow(str(tmp_path / "new"), os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o600


def test_data_dirs_are_private_and_planted_paths_refused(tmp_path: Path) -> None:
    path = private_dir(str(tmp_path / "a" / "data"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o755)
    private_dir(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.symlink(path, tmp_path / "link")
    with pytest.raises(ConfigError, match="symlink"):
        private_dir(str(tmp_path / "link"))


def test_names_that_become_paths_are_single_components() -> None:
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(ValueError):
            check_name(bad, "flow-id")
    with pytest.raises(ValueError):
        parse_name("..")
    assert parse_name("feed1") == "feed1"


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_toml(str(path))


def zdf_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZDF_SECURITY_DIR": ""}
    return subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_startup_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff"\n')
    one_line_error(zdf_cli("metastore", "--config", str(bad)), "UTF-8")
    one_line_error(
        zdf_cli(
            "metastore", "--addr", f"999.1.1.1:{free_port()}", "--data-dir", str(tmp_path / "m")
        ),
        "not an IP address",
    )
    one_line_error(
        zdf_cli("metastore", "--log-file", str(tmp_path / "no" / "such" / "m.log")), "log-file"
    )
    # an unwritable data-dir, as root too: tests/security/test_disk_full.py


def test_an_address_in_use_is_one_line(tmp_path: Path) -> None:
    meta = MetastoreProcess(str(tmp_path / "meta"), log_path=str(tmp_path / "meta.log"))
    try:
        meta.start()
        out = zdf_cli(
            "metastore",
            "--addr",
            meta.addr,
            "--peer-addr",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(tmp_path / "m2"),
        )
        one_line_error(out, "Address already in use", meta.addr)
    finally:
        meta.kill()
