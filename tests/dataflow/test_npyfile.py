"""``StepFile``: a valid .npy at every step, cut back to the last indexed step after a
torn write, sealed with its row count, never written through a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zdf.dataflow import Flow
from zdf.dataflow.builtin import Sequence
from zdf.dataflow.npyfile import StepFile, header_bytes
from zdf.errors import JobError
from zdf.runtime.local import LocalRunner

DTYPE = np.dtype([("key", "S8"), ("sum", "<i8")])


def rows(n: int, start: int = 0) -> np.ndarray:
    out = np.zeros(n, DTYPE)
    out["sum"] = np.arange(start, start + n)
    return out


def test_header_has_one_length_for_any_count() -> None:
    assert len(header_bytes(DTYPE, 0)) == len(header_bytes(DTYPE, 10**18))
    assert len(header_bytes(DTYPE, 0)) % 64 == 0


def test_recover_cuts_a_torn_step_and_resumes_after_the_last_indexed_one(tmp_path: Path) -> None:
    path = str(tmp_path / "out-0.npy")
    f = StepFile(path, DTYPE)
    assert f.try_lock()
    f.start_fresh()
    f.append_step([rows(3)])
    f.append_step([])
    f.append_step([rows(2, 3)])
    # A write that a kill cut short: rows past the index, and half an index entry.
    os.pwrite(f.fd, rows(5, 100).tobytes()[:-3], f.length)
    os.pwrite(f.index_fd, b"\x01\x02\x03", 3 * 16)
    f.close()
    again = StepFile(path, DTYPE)
    assert again.try_lock()
    assert again.recover() == 3
    again.append_step([rows(1, 5)])
    assert again.seal() == 6
    again.close()
    assert np.load(path)["sum"].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_second_writer_waits_for_the_lock(tmp_path: Path) -> None:
    first = StepFile(str(tmp_path / "x.npy"), DTYPE)
    second = StepFile(str(tmp_path / "x.npy"), DTYPE)
    try:
        assert first.try_lock() and not second.try_lock()
        first.close()
        assert second.try_lock()
    finally:
        first.close()
        second.close()


def test_a_sink_refuses_a_symlink_at_its_path(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "out-0.npy").symlink_to(target)
    flow = Flow("f")
    flow.source("numbers", Sequence, stop=10).sink("out", dir=str(tmp_path))
    with LocalRunner(flow.to_job()) as runner, pytest.raises(JobError, match="symbolic link"):
        runner.run(timeout=10)
    assert target.read_bytes() == b"keep me"
