"""verify-sink: passes exact output, catches each kind of broken output."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from zdf.cli.verify_sink import verify, verify_sink
from zdf.jobs.bench import BenchConfig, build_bench_job, load_bench_config
from zdf.records import DATA, DDL, SINK_DTYPE
from zdf.runtime.local import run_local

pytestmark = pytest.mark.timeout(60)

KEYS = {
    "flow-id": "v",
    "table-num": 3,
    "servers": 2,
    "rcd-cnt": 1000,
    "ddl-freq": 100,
    "batch-size": 128,
}


@pytest.fixture(scope="module")
def good_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchConfig, Path]:
    out = tmp_path_factory.mktemp("good")
    data = {**KEYS, "sink-dir": str(out)}
    run_local(build_bench_job(data, "t.toml"), timeout=30)
    return load_bench_config(data, "t.toml"), out


@pytest.fixture
def broken(good_output: tuple[BenchConfig, Path], tmp_path: Path) -> Callable[..., list[str]]:
    """``broken(edit)``: copy the good output, apply ``edit(files)``, return the failed kinds."""
    config, good = good_output

    def make(edit: Callable[[list[np.ndarray]], list[np.ndarray]]) -> list[str]:
        shutil.copytree(good, tmp_path / "out")
        base = tmp_path / "out" / config.flow_id
        files = [np.fromfile(base / f"sink_{s}.bin", SINK_DTYPE) for s in range(2)]
        for s, rows in enumerate(edit(files)):
            rows.tofile(base / f"sink_{s}.bin")
        report = verify(config, str(tmp_path / "out"))
        assert not report.ok and report.violations
        return sorted(report.counts)

    return make


def test_good_output_passes(good_output: tuple[BenchConfig, Path]) -> None:
    config, out = good_output
    report = verify(config, str(out))
    assert report.ok, report.violations
    assert report.records == 3000 and report.ddls == 30


def test_a_missing_pk_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        i = int(np.flatnonzero(files[0]["tp"] == DATA)[10])
        return [np.delete(files[0], i), files[1]]

    assert broken(edit) == ["missing-data"]


def test_a_duplicate_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        dup = files[0][files[0]["tp"] == DATA][:1].copy()
        return [files[0], np.concatenate([files[1], dup])]

    assert "duplicate-data" in broken(edit)


def test_a_duplicate_ddl_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        ddl = files[0][files[0]["tp"] == DDL][-1:].copy()
        return [np.concatenate([files[0], ddl]), files[1]]

    assert "duplicate-ddl" in broken(edit)


def test_a_ddl_written_early_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        rows = files[1]
        i = int(np.flatnonzero(rows["tp"] == DDL)[0])
        rows["sink_ts"][i] = min(int(f["sink_ts"].min()) for f in files) - 1
        return files

    assert broken(edit) == ["written-after-ddl"]


def test_data_written_before_its_ddl_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        rows = files[0]
        i = int(np.flatnonzero((rows["tp"] == DATA) & (rows["schema_ver"] == 5))[0])
        rows["sink_ts"][i] = min(int(f["sink_ts"].min()) for f in files) - 1
        return files

    assert broken(edit) == ["written-before-ddl"]


def test_out_of_order_within_a_file_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        rows = files[0]
        idx = np.flatnonzero((rows["tid"] == 1) & (rows["tp"] == DATA))[3:5]
        rows[idx] = rows[idx[::-1]]
        return files

    assert broken(edit) == ["out-of-order"]


def test_garbage_is_caught(broken: Callable[..., list[str]]) -> None:
    def edit(files: list[np.ndarray]) -> list[np.ndarray]:
        files[1]["tid"][0] = 99
        return files

    kinds = broken(edit)
    assert "invalid-record" in kinds
    assert "missing-data" in kinds or "missing-ddl" in kinds


def test_cli_exit_codes(good_output: tuple[BenchConfig, Path], tmp_path: Path) -> None:
    _, out = good_output
    toml = tmp_path / "bench.toml"
    toml.write_text('flow-id = "v"\ntable-num = 3\nservers = 2\nrcd-cnt = 1000\nddl-freq = 100\n')
    runner = CliRunner()
    ok = runner.invoke(verify_sink, ["--config", str(toml), "--sink-dir", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    empty = runner.invoke(verify_sink, ["--config", str(toml), "--sink-dir", str(tmp_path)])
    assert empty.exit_code == 1 and "missing-file" in empty.output
    bad = tmp_path / "bad.toml"
    bad.write_text('flow-id = "v"\ntable-num = "many"\n')
    result = runner.invoke(verify_sink, ["--config", str(bad)])
    assert result.exit_code == 2
    assert "table-num" in result.output
    as_json = runner.invoke(
        verify_sink, ["--config", str(toml), "--sink-dir", str(out), "--format", "json"]
    )
    assert as_json.exit_code == 0 and '"ok": true' in as_json.output
