"""Where an executor's workers bind data sockets (zdf.executor.sockdir)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from zdf.executor import sockdir


def test_a_fresh_private_directory_on_the_tmpfs_removed_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmpfs = tmp_path / "shm"
    tmpfs.mkdir()
    monkeypatch.setattr(sockdir, "TMPFS", str(tmpfs))
    path, own = sockdir.data_socket_dir(str(tmp_path / "run"))
    other, _ = sockdir.data_socket_dir(str(tmp_path / "run"))
    assert own and Path(path).parent == tmpfs and path != other
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    (Path(path) / "x.sock").touch()
    sockdir.remove(path)
    assert not os.path.exists(path)


def test_without_a_tmpfs_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sockdir, "TMPFS", str(tmp_path / "absent"))
    path, own = sockdir.data_socket_dir(str(tmp_path / "run"))
    assert (path, own) == (str(tmp_path / "run"), False)
    assert os.path.isdir(path)


def test_a_directory_left_by_a_killed_executor_is_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has now
    stale = tmp_path / f"zdf-{gone.pid}-abc123"
    live = tmp_path / f"zdf-{os.getpid()}-def456"
    unrelated = tmp_path / "zdf-notours"
    for path in (stale, live, unrelated):
        path.mkdir()
        (path / "x.sock").touch()
    assert sockdir.sweep(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and unrelated.exists()
