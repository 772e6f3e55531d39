"""Disks that are full or read-only, as root too (issue 15, item 13): a process with a
data-dir it cannot write stops with one line; a metastore whose disk fills up stops
with one line naming its data-dir and loses nothing it acknowledged; an executor
whose disk fills up gives up its tasks' output, with a warning, not their results.

Root writes anywhere, so the read-only folder and the full disk are made in a private
mount namespace (``tests.security.mounts``): a read-only bind mount, a tmpfs of 1-2 MiB.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.checks import one_line_error
from tests.security.mounts import MountNamespace
from zdf import protocol as P
from zdf.errors import Timeout, UnknownOutcome
from zdf.jobs.function import build_function_job
from zdf.localcluster import LocalCluster, wait_until
from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess
from zdf.observe.taskout import TaskOutput, TaskStream, log_path
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(120)

VALUE = b"v" * 100_000


def zdf_cli(argv: list[str], inside: MountNamespace | None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "zdf.cli.main", *argv]
    return subprocess.run(
        inside.command(command) if inside else command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ZDF_SECURITY_DIR": ""},
    )


def test_an_unwritable_data_dir_is_one_line_as_root_too(tmp_path: Path) -> None:
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o700)
    inside = None
    if os.geteuid() == 0:  # root writes anywhere: a read-only bind mount it cannot
        inside = MountNamespace(
            f"mount --bind {readonly} {readonly}; mount -o remount,bind,ro {readonly}"
        )
    else:
        readonly.chmod(0o500)
    try:
        ports = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        one_line_error(
            zdf_cli(
                [
                    "metastore",
                    "--data-dir",
                    str(readonly / "meta"),
                    "--addr",
                    ports[0],
                    "--peer-addr",
                    ports[1],
                ],
                inside,
            ),
            str(readonly / "meta"),
        )
        one_line_error(
            zdf_cli(
                [
                    "executor",
                    "--data-dir",
                    str(readonly / "exec"),
                    "--worker-addr",
                    ports[2],
                    "--join",
                    ports[0],
                    "--meta-endpoints",
                    ports[1],
                ],
                inside,
            ),
            str(readonly / "exec"),
        )
    finally:
        if inside is not None:
            inside.close()


class MetastoreInside(MetastoreProcess):
    def __init__(self, namespace: MountNamespace, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.namespace = namespace

    def command(self) -> list[str]:
        return self.namespace.command(super().command())


def test_a_metastore_on_a_full_disk_stops_with_one_line_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with MountNamespace(f"mount -t tmpfs -o size=2m,mode=0700 zdf-full {disk}") as namespace:
        meta = MetastoreInside(
            namespace,
            str(disk / "meta"),
            log_path=str(tmp_path / "meta.log"),
            extra_args=["--security-dir", ""],
        )
        try:
            meta.start()
            acknowledged: list[str] = []
            with (
                MetaClient(meta.addr, timeout=3.0) as client,
                pytest.raises((UnknownOutcome, Timeout)),
            ):
                for i in range(100):  # 10 MB into 2 MiB
                    client.put(f"/app/k{i}", VALUE)
                    acknowledged.append(f"/app/k{i}")
            assert acknowledged, "not one write fitted on the disk"
            assert meta.proc is not None
            wait_until(lambda: meta.proc.poll() is not None, 20, "the metastore to stop")  # type: ignore[union-attr]
            assert meta.proc.returncode == 1
            last = meta.log_tail(1).strip()
            assert last.startswith(f"error: data-dir {disk / 'meta'}: "), meta.log_tail()
            assert "No space left on device" in last, last
            assert "Traceback" not in meta.log_tail(200)

            namespace.run(f"mount -o remount,size=64m {disk}")  # room again
            meta.start()
            with MetaClient(meta.addr, timeout=5.0) as client:
                for key in acknowledged:
                    kv = client.get(key)
                    assert kv is not None and kv.value == VALUE, key
                client.put("/app/after", b"ok")
                assert client.get("/app/after").value == b"ok"
        finally:
            meta.kill()


def test_task_output_that_cannot_be_written_is_given_up_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = TaskOutput(str(tmp_path))
    path = Path(log_path(str(tmp_path), "j", "t", 1))
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/full")  # every write: ENOSPC, as root too
    through = io.StringIO()
    stream = TaskStream(output, through)
    with output.scope("j", "t", 1):
        stream.write("first\n")
        stream.write("second\n")
    assert through.getvalue() == "first\nsecond\n"
    assert "j/t attempt 1 is not kept from here on: No space left on device" in caplog.text
    with output.scope("j", "t", 2):
        stream.write("another attempt\n")
    assert Path(log_path(str(tmp_path), "j", "t", 2)).read_text() == "another attempt\n"
    output.close("j", "t")
    assert output.lost == {}


@pytest.mark.slow
def test_an_executor_on_a_full_disk_finishes_its_tasks_and_says_what_it_did_not_keep(
    tmp_path: Path,
) -> None:
    """Task output that no longer fits is given up with a warning; the tasks' results
    (what the job acknowledges) are whole, and the executor goes on serving."""
    base = tmp_path / "cluster"
    (base / "executor-1").mkdir(parents=True)
    with MountNamespace(
        f"mount -t tmpfs -o size=512k,mode=0700 zdf-full {base / 'executor-1'}"
    ) as namespace:

        def place(name: str) -> tuple[list[str], str]:
            return (namespace.command([]) if name.startswith("executor") else [], "127.0.0.1")

        with LocalCluster(
            str(base),
            executors=1,
            workers=1,
            place=place,
            keepalive_ttl="3s",  # writing output is slow on a busy machine: no false deaths
            extra_env={"ZDF_ELECTION_TTL": "5s"},
        ) as cluster:
            data = {"job-type": "function", "name": "loud", "function": "zdf.jobs.examples:chatty"}
            spec = build_function_job({**data, "tasks": 4, "args": [10_000]}, "<test>").to_dict()
            with cluster.client() as rpc:
                job_id = rpc.call(P.SUBMIT_JOB, {"spec": spec})["job_id"]
                job = wait_until(
                    lambda: (
                        (j := rpc.call(P.JOB_STATUS, {"job_id": job_id}))["state"]
                        in ("finished", "failed")
                        and j
                    ),
                    90,
                    "the job to end",
                )
            assert job["state"] == "finished", job
            assert [t["info"]["result"] for t in job["tasks"]] == [10_000] * 4
            log = Path(cluster.executors[0].log_path).read_text(errors="replace")
            assert "is not kept from here on: No space left on device" in log
            assert "Traceback" not in log
            assert cluster.executor_state("exec-1") == "alive"
