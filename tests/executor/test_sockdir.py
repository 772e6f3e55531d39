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
