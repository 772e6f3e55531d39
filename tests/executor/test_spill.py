"""The workers' spilling result store: LRU to disk above the target, read back,
files removed with their keys, sizes, the pause threshold, private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from zdf.errors import ConfigError
from zdf.executor.spill import (
    SpillStore,
    default_memory_limit,
    make_store,
    resolve_memory_limit,
    sizeof,
)

MiB = 1 << 20


def store(tmp_path: Path, limit: int = 10 * MiB, rss: int = 0) -> SpillStore:
    return SpillStore(limit, tmp_path / "spill", process_memory=lambda: rss)


def files(s: SpillStore) -> list[str]:
    return sorted(os.listdir(s.spill_dir))


def test_least_recently_used_values_spill_above_the_target(tmp_path: Path) -> None:
    s = store(tmp_path)  # target 6 MiB
    arrays = {k: np.full(MiB // 8, i, dtype=np.float64) for i, k in enumerate("abcdefgh")}
    for key in "abcde":
        s[key] = arrays[key]
    assert s.memory_bytes == 5 * MiB and s.spilled_bytes == 0 and not files(s)
    s["a"]  # a is now the most recently used: b goes first
    s["f"] = arrays["f"]
    s["g"] = arrays["g"]
    assert s.is_spilled("b") and not s.is_spilled("a")
    assert s.memory_bytes <= s.target_bytes
    assert s.spilled_bytes >= MiB and len(files(s)) == 1
    for key in "abcdefg":  # every value reads back, spilled or not
        np.testing.assert_array_equal(s[key], arrays[key])
    assert len(s) == 7 and set(s) == set("abcdefg")


def test_spilled_arrays_come_back_as_read_only_memory_maps(tmp_path: Path) -> None:
    s = store(tmp_path, limit=MiB)
    big = np.arange(300_000, dtype=np.int64).reshape(1000, 300)  # over the target alone
    s["big"] = big
    assert s.is_spilled("big") and s.memory_bytes == 0
    back = s["big"]
    assert isinstance(back, np.memmap) and not back.flags.writeable
    np.testing.assert_array_equal(back, big)
    fortran = np.asfortranarray(np.ones((600, 300)))
    s["f"] = fortran
    np.testing.assert_array_equal(s["f"], fortran)
    s["scalar"] = np.float32(1.5)  # a numpy scalar is a plain value
    s["empty"] = np.zeros((0, 3))
    s["zero-d"] = np.array(7)
    assert s["zero-d"] == 7 and s["empty"].shape == (0, 3)


def test_other_values_spill_as_payload_frames(tmp_path: Path) -> None:
    s = store(tmp_path, limit=MiB)
    value = {"rows": [b"x" * 1000] * 800, "arr": np.arange(10), "n": 3}
    s["v"] = value
    assert s.is_spilled("v") and s.spilled_bytes > 800_000
    back = s["v"]
    assert back["rows"] == value["rows"] and back["n"] == 3
    np.testing.assert_array_equal(back["arr"], value["arr"])


def test_a_value_that_cannot_be_packed_stays_in_memory(tmp_path: Path) -> None:
    s = store(tmp_path, limit=MiB)
    blob = [object()] * 100_000  # over the target, not packable
    s["odd"] = blob
    assert not s.is_spilled("odd") and s["odd"] is blob
    s["arr"] = np.ones(MiB // 8)
    assert s.is_spilled("arr") and not s.is_spilled("odd")
    assert not files(s) or all(name.endswith(".npy") for name in files(s))


def test_delete_and_replace_remove_the_file(tmp_path: Path) -> None:
    s = store(tmp_path, limit=MiB)
    s["k"] = np.ones(MiB // 4)
    assert len(files(s)) == 1
    s["k"] = np.ones(MiB // 4)  # replaced: the old file goes
    assert len(files(s)) == 1
    del s["k"]
    assert files(s) == [] and s.spilled_bytes == 0 and "k" not in s
    s["m"] = b"small"
    del s["m"]
    assert s.memory_bytes == 0
    with pytest.raises(KeyError):
        s["m"]
    with pytest.raises(KeyError):
        del s["m"]
    s["x"] = np.ones(MiB // 4)
    s.close()
    assert files(s) == [] and len(s) == 0


def test_over_limit_follows_the_pause_fraction(tmp_path: Path) -> None:
    rss = [0]
    s = SpillStore(10 * MiB, tmp_path / "d", process_memory=lambda: rss[0])
    s["a"] = [object()] * 1000  # unspillable and small: under the limit
    assert not s.over_limit
    rss[0] = 9 * MiB  # the process (unmanaged memory too) is above 8 MiB
    assert s.over_limit
    rss[0] = 0
    s2 = SpillStore(100_000, tmp_path / "e", process_memory=lambda: 0)
    s2["odd"] = [object()] * 20_000  # cannot spill, above the pause alone
    assert s2.memory_bytes > s2.pause_bytes and s2.over_limit


def test_files_are_private_and_symlinks_are_refused(tmp_path: Path) -> None:
    s = store(tmp_path, limit=MiB)
    s["k"] = np.ones(MiB // 4)
    assert stat.S_IMODE(os.stat(s.spill_dir).st_mode) == 0o700
    (name,) = files(s)
    assert stat.S_IMODE(os.stat(s.spill_dir / name).st_mode) == 0o600
    assert "/" not in name and "k" not in name
    del s["k"]
    # A symlink planted where a file would go is not followed (the value stays in memory).
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, s.spill_dir / name)
    s["k"] = np.ones(MiB // 4)
    assert victim.read_bytes() == b"keep" and not s.is_spilled("k")
    assert s["k"].sum() == MiB // 4
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    with pytest.raises(ConfigError):
        SpillStore(MiB, link)


def test_sizes_and_factory(tmp_path: Path) -> None:
    assert sizeof(np.ones(1000)) == 8000
    assert sizeof(b"abc") == 3
    assert 900_000 < sizeof([b"x" * 1000] * 1000) < 1_200_000
    assert sizeof({i: np.ones(100) for i in range(1000)}) >= 800_000
    made = make_store(5 * MiB, tmp_path / "w")
    assert made.memory_limit == 5 * MiB and made.spill_dir == tmp_path / "w"
    auto = make_store(None, tmp_path / "auto")
    assert auto.memory_limit == default_memory_limit() > 0
    assert default_memory_limit(2) == pytest.approx(default_memory_limit(1) / 2, rel=0.01)
    assert resolve_memory_limit(0, 4) == default_memory_limit(4)
    assert resolve_memory_limit(3 * MiB, 4) == 3 * MiB
