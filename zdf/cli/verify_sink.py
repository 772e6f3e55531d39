"""``zdf verify-sink``: is the benchmark job's output exact?

Reads ``<sink-dir>/<flow-id>/sink_<i>.bin`` (``SINK_DTYPE`` rows) for every stream
and checks, vectorised over all rows:

1. every data pk 1..rcd-cnt of every table is written exactly once, with
   schema_ver = pk // ddl-freq;
2. every DDL version 1..rcd-cnt // ddl-freq of every table exactly once;
3. within each file, per table, records are in order (DDL v just before pk
   v * ddl-freq);
4. the DDL barrier, across files by ``sink_ts``: data of version >= v was written
   after DDL v, data of version < v before it. (Sinks stamp ``sink_ts`` from the
   host clock and make it strictly increasing per file; across hosts this
   assumes synchronised clocks.)

``verify`` is pure (files in, report out); the command prints the report and
exits 0 only when every check holds (1 on violations, 2 on a bad config).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

import click
import numpy as np

from zdf.errors import ConfigError
from zdf.jobs.bench import BenchConfig, load_bench_config
from zdf.records import DATA, DDL, SINK_DTYPE

MAX_LINES = 20
PER_KIND = 5


@dataclass
class VerifyReport:
    files: list[str] = field(default_factory=list)
    records: int = 0
    ddls: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # violation kind -> how many
    violations: list[str] = field(default_factory=list)  # the first few, one line each

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, kind: str, count: int, lines: list[str]) -> None:
        if count:
            self.counts[kind] = self.counts.get(kind, 0) + count
            room = MAX_LINES - len(self.violations)
            self.violations.extend(lines[: max(0, room)])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _load(path: str, report: VerifyReport) -> np.ndarray:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        report.add("missing-file", 1, [f"{path}: no such file"])
        return np.empty(0, SINK_DTYPE)
    whole = len(raw) - len(raw) % SINK_DTYPE.itemsize
    if whole != len(raw):
        report.add("torn-file", 1, [f"{path}: {len(raw) - whole} bytes after the last whole row"])
    return raw[:whole].view(SINK_DTYPE)


def verify(config: BenchConfig, sink_dir: str | None = None) -> VerifyReport:
    """Check the sink files of ``config``'s job under ``sink_dir`` (default: its sink-dir)."""
    report = VerifyReport()
    base = os.path.join(sink_dir or config.sink_dir, config.flow_id)
    parts = []
    for i in range(config.streams):
        path = os.path.join(base, f"sink_{i}.bin")
        report.files.append(path)
        rows = _load(path, report)
        parts.append(rows)
        _check_file_order(config, os.path.basename(path), rows, report)
    rows = np.concatenate(parts) if parts else np.empty(0, SINK_DTYPE)
    rows = _check_valid(config, rows, report)
    data, ddl = rows[rows["tp"] == DATA], rows[rows["tp"] == DDL]
    report.records, report.ddls = len(data), len(ddl)
    _check_exactly_once(config, data, ddl, report)
    _check_barrier(config, data, ddl, report)
    return report


def _check_valid(config: BenchConfig, rows: np.ndarray, report: VerifyReport) -> np.ndarray:
    versions = config.rcd_cnt // config.ddl_freq
    tp, tid, pk, ver = rows["tp"], rows["tid"], rows["pk"], rows["schema_ver"]
    ok_data = (tp == DATA) & (pk >= 1) & (pk <= config.rcd_cnt)
    ok_ddl = (
        (tp == DDL)
        & (ver >= 1)
        & (ver <= versions)
        & (pk == ver.astype(np.int64) * config.ddl_freq)
    )
    good = (tid >= 0) & (tid < config.table_num) & (ok_data | ok_ddl)
    good &= (tp != DATA) | (ver == pk // config.ddl_freq)
    bad = np.flatnonzero(~good)
    report.add(
        "invalid-record",
        len(bad),
        [
            f"invalid record tp={r['tp']} table={r['tid']} pk={r['pk']} version={r['schema_ver']}"
            for r in rows[bad[:PER_KIND]]
        ],
    )
    valid: np.ndarray = rows[good]
    return valid


def _check_exactly_once(
    config: BenchConfig, data: np.ndarray, ddl: np.ndarray, report: VerifyReport
) -> None:
    n, versions = config.rcd_cnt, config.rcd_cnt // config.ddl_freq
    for kind, rows, key_max, what in (
        ("data", data, n, "pk"),
        ("ddl", ddl, versions, "DDL version"),
    ):
        keys = rows["tid"].astype(np.int64) * (key_max + 1) + (
            rows["pk"] if kind == "data" else rows["schema_ver"].astype(np.int64)
        )
        counts = np.bincount(keys, minlength=config.table_num * (key_max + 1))
        counts = counts.reshape(config.table_num, key_max + 1)[:, 1:]
        for label, mask in (("missing", counts == 0), ("duplicate", counts > 1)):
            where = np.argwhere(mask)
            lines = [
                f"table {t}: {what} {k + 1} "
                + ("missing" if label == "missing" else f"written {counts[t, k]} times")
                for t, k in where[:PER_KIND].tolist()
            ]
            report.add(f"{label}-{kind}", len(where), lines)


def _order_keys(config: BenchConfig, rows: np.ndarray) -> np.ndarray:
    """A per-table sort key: DDL v sorts just before data pk v * ddl-freq."""
    pk2 = rows["pk"].astype(np.int64) * 2
    return np.where(rows["tp"] == DDL, pk2 - 1, pk2)  # type: ignore[no-any-return]


def _check_file_order(
    config: BenchConfig, name: str, rows: np.ndarray, report: VerifyReport
) -> None:
    if len(rows) < 2:
        return
    order = np.argsort(rows["tid"], kind="stable")  # file order within each table
    tid = rows["tid"][order]
    keys = _order_keys(config, rows)[order]
    same = tid[1:] == tid[:-1]
    bad = np.flatnonzero(same & (keys[1:] <= keys[:-1]))
    lines = []
    for i in bad[:PER_KIND].tolist():
        a, b = rows[order[i]], rows[order[i + 1]]
        lines.append(
            f"{name}: table {b['tid']}: {_describe(b)} written after {_describe(a)} (out of order)"
        )
    report.add("out-of-order", len(bad), lines)


def _describe(row: Any) -> str:
    if row["tp"] == DDL:
        return f"DDL {row['schema_ver']}"
    return f"pk {row['pk']}"


def _check_barrier(
    config: BenchConfig, data: np.ndarray, ddl: np.ndarray, report: VerifyReport
) -> None:
    versions = config.rcd_cnt // config.ddl_freq
    if versions == 0 or len(data) == 0:
        return
    tables = config.table_num
    big = np.iinfo(np.int64).max
    # When each DDL was written (the earliest copy; duplicates are reported elsewhere).
    first = np.full((tables, versions + 2), big, dtype=np.int64)
    np.minimum.at(first, (ddl["tid"], ddl["schema_ver"]), ddl["sink_ts"])
    last = np.full((tables, versions + 2), -1, dtype=np.int64)
    np.maximum.at(last, (ddl["tid"], ddl["schema_ver"]), ddl["sink_ts"])
    # Missing DDLs must not produce barrier reports: treat them as unconstraining.
    last[:, 0] = -1
    last = np.maximum.accumulate(last, axis=1)  # latest DDL <= u
    first = np.minimum.accumulate(first[:, ::-1], axis=1)[:, ::-1]  # earliest DDL >= u
    tid, ver, ts = data["tid"], data["schema_ver"].astype(np.int64), data["sink_ts"]
    early = np.flatnonzero(ts <= last[tid, ver])
    late = np.flatnonzero(ts >= first[tid, ver + 1])
    report.add(
        "written-before-ddl",
        len(early),
        [
            f"table {r['tid']}: pk {r['pk']} (version {r['schema_ver']}) written before "
            f"DDL ({r['tid']}, {r['schema_ver']}) or an earlier one"
            for r in data[early[:PER_KIND]]
        ],
    )
    report.add(
        "written-after-ddl",
        len(late),
        [
            f"table {r['tid']}: pk {r['pk']} (version {r['schema_ver']}) written after "
            f"DDL ({r['tid']}, {r['schema_ver'] + 1}) or a later one"
            for r in data[late[:PER_KIND]]
        ],
    )


@click.command("verify-sink")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="the bench job file (e.g. configs/bench-example.toml)",
)
@click.option(
    "--sink-dir", default=None, help="where the sinks wrote (default: the file's sink-dir)"
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def verify_sink(config_path: str, sink_dir: str | None, fmt: str) -> None:
    """Check that the benchmark job's output is exact (exit 0 only if it is)."""
    try:
        with open(config_path, "rb") as fh:
            data = tomllib.load(fh)
        config = load_bench_config(data, config_path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from None
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None
    report = verify(config, sink_dir)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        expected = config.table_num * config.rcd_cnt
        state = "OK" if report.ok else "FAILED"
        click.echo(
            f"verify-sink {state}: {report.records}/{expected} records, {report.ddls}/"
            f"{config.table_num * (config.rcd_cnt // config.ddl_freq)} DDLs in "
            f"{len(report.files)} files"
        )
        for kind, count in sorted(report.counts.items()):
            click.echo(f"  {kind}: {count}")
        for line in report.violations:
            click.echo(f"  - {line}")
    raise SystemExit(0 if report.ok else 1)
