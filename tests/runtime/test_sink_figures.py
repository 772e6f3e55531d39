"""The sink's running figures: the latency histogram, deferred binning, and folding rows."""

from __future__ import annotations

import numpy as np
import pytest

from zdf.records import DATA, DDL, SINK_DTYPE
from zdf.runtime.bench import latency, sinkfile
from zdf.runtime.bench.latency import EDGES_NS, LatencyHistogram, WriteFigures
from zdf.runtime.bench.sinkfile import FOLD_BY_ROW, SinkState


def binned_row_by_row(latencies: np.ndarray) -> np.ndarray:
    bins = np.searchsorted(EDGES_NS, latencies, side="right")
    return np.bincount(bins, minlength=len(EDGES_NS) + 1)


@pytest.mark.parametrize("seed", range(6))
def test_histogram_bins_runs_exactly_as_row_by_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=40)
    values = rng.integers(0, 10**10, size=len(lengths))
    runs = np.repeat(values, lengths)  # few runs: the run-length path
    scattered = rng.integers(0, 10**10, size=500)  # all distinct: the per-row path
    edges = EDGES_NS[[0, 5, 900]].astype(np.int64)  # values on bin edges
    for sample in (runs, scattered, np.repeat(edges, 7), runs[:1]):
        hist = LatencyHistogram()
        hist.add(sample)
        assert (hist.counts == binned_row_by_row(sample)).all()


def sink_rows(ts: list[int], tp: int = DATA) -> np.ndarray:
    rows = np.zeros(len(ts), SINK_DTYPE)
    rows["ts"] = ts
    rows["tp"] = tp
    return rows


def test_write_figures_match_binning_every_write_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(latency, "FOLD_ROWS", 50)  # fold several times on the way
    rng = np.random.default_rng(7)
    figures = WriteFigures()
    expected = LatencyHistogram()
    first = None
    written = 0
    now = 10**12
    for k in range(40):
        now += int(rng.integers(1, 10**6))
        ts = np.repeat(now - rng.integers(1, 10**8, size=3), rng.integers(1, 9, size=3))
        rows = sink_rows(ts.tolist(), DDL if k % 5 == 0 else DATA)
        figures.wrote(now, rows, data=k % 5 != 0)
        written += rows.nbytes
        if k % 5:
            expected.add(now - rows["ts"])
        first = int(ts.min()) if first is None else min(first, int(ts.min()))
    summary = figures.as_dict()
    assert (summary["hist"].counts == expected.counts).all()  # DDL rows are not latencies
    assert summary["first_ts"] == first  # but they count for the first time
    assert summary["last_ts"] == now
    assert summary["records"] == expected.total
    assert summary["bytes"] == written


def test_write_figures_count_records_and_ddls() -> None:
    figures = WriteFigures()
    figures.wrote(100, sink_rows([1, 2, 3]), data=True)
    figures.wrote(200, sink_rows([4]), data=False)
    assert (figures.records, figures.ddls, figures.last_ts, figures.first_ts) == (3, 1, 200, 1)
    assert figures.hist.total == 3


def test_folding_a_few_rows_agrees_with_the_vector_fold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, FOLD_BY_ROW + 1))
        rows = np.zeros(n, SINK_DTYPE)
        rows["tid"] = rng.integers(0, 4, size=n)
        rows["gtid"] = rng.integers(0, 1000, size=n)
        rows["tp"] = rng.choice([DATA, DDL], size=n)
        rows["schema_ver"] = rng.integers(0, 50, size=n)
        by_row = SinkState(4)
        by_row.fold(rows)
        with monkeypatch.context() as patch:
            patch.setattr(sinkfile, "FOLD_BY_ROW", 0)
            vector = SinkState(4)
            vector.fold(rows)
        assert by_row.to_wire() == vector.to_wire()
