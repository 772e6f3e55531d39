"""Dataflow jobs run in this process (``LocalRunner``): exact results, including when
tasks die and start again at random moments (an executor's death played in-process)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.helpers import run_with_failures
from zdf.dataflow import Flow
from zdf.dataflow.builtin import KeyedSum, Sequence, TumblingWindow
from zdf.dataflow.examples import events, word_counts
from zdf.dataflow.partition import hash_channels
from zdf.dataflow.verify import read_sink, sequence_sums, verify_flow
from zdf.jobs.spec import JobSpec
from zdf.runtime.local import LocalRunner

pytestmark = pytest.mark.timeout(120)


def sums_flow(
    out: Path, stop: int = 200_000, keys: int = 97, batch: int = 4096, rate: int = 0
) -> JobSpec:
    """``rate``: rows/s a source instance makes (0: as fast as it can); a paced job is
    still running when a test restarts its tasks, however fast the machine."""
    flow = Flow("sums")
    (
        flow.source(
            "numbers", Sequence, parallelism=2, stop=stop, keys=keys, batch=batch, rate=rate
        )
        .key_by("key")
        .apply("sum", KeyedSum, parallelism=3)
        .sink("out", dir=str(out))
    )
    return flow.to_job()


def files(out: Path, flow_id: str, name: str, n: int) -> list[np.ndarray]:
    parts = read_sink(str(out / flow_id), name, n)
    assert all(not isinstance(p, str) for p in parts), parts
    return [p for p in parts if not isinstance(p, str)]


def check_sums(out: Path, stop: int, keys: int) -> None:
    parts = files(out, "sums", "out", 3)
    for i, rows in enumerate(parts):  # each key in exactly the instance its hash names
        assert (hash_channels(rows["key"], 3) == i).all()
    rows = np.concatenate(parts)
    rows = rows[np.argsort(rows["key"])]
    total, count = sequence_sums(0, stop, keys)
    assert rows["key"].tolist() == list(range(keys))
    assert (rows["sum"] == total).all() and (rows["count"] == count).all()


def test_keyed_sums_are_exact_with_a_hash_edge(tmp_path: Path) -> None:
    job = sums_flow(tmp_path)
    with LocalRunner(job) as runner:
        summaries = runner.run(timeout=60)
    check_sums(tmp_path, 200_000, 97)
    assert sum(summaries[f"sum-{i}"]["records"] for i in range(3)) == 200_000
    assert verify_flow(job).ok


@pytest.mark.parametrize("seed", range(4))
def test_tasks_restarted_at_random_moments_keep_the_sums_exact(tmp_path: Path, seed: int) -> None:
    job = sums_flow(tmp_path, stop=600_000, batch=2048, rate=1_000_000)
    runner = run_with_failures(job, seed, failures=3, gap=0.08, linger=0.02)
    assert max(runner.attempts.values()) >= 1
    check_sums(tmp_path, 600_000, 97)
    # Records count the stream, not the work (rows taken in again are "replayed"). (A
    # source restarted after its receivers were done ends at once, with a part only.)
    assert sum(runner.finished[f"sum-{i}"]["records"] for i in range(3)) == 600_000


@pytest.mark.parametrize("seed", range(2))
def test_zombies_do_not_break_exactly_once(tmp_path: Path, seed: int) -> None:
    job = sums_flow(tmp_path, stop=600_000, batch=2048, rate=1_000_000)
    runner = run_with_failures(job, 10 + seed, failures=2, zombies=True, gap=0.08, linger=0.02)
    assert max(runner.attempts.values()) >= 1
    check_sums(tmp_path, 600_000, 97)


def test_a_restarted_sink_resumes_after_what_it_wrote(tmp_path: Path) -> None:
    job = sums_flow(tmp_path, stop=400_000, batch=1024)
    flow = Flow("copy")
    flow.source("numbers", Sequence, parallelism=2, stop=400_000, batch=1024).rebalance().sink(
        "raw", parallelism=3, dir=str(tmp_path)
    )
    job = flow.to_job()
    with LocalRunner(job) as runner:
        runner.start()
        runner.reactor.run(until=lambda: False, deadline=time.monotonic() + 0.05)
        runner.restart(["raw-1"])
        runner.run(timeout=60)
    rows = np.concatenate(files(tmp_path, "copy", "raw", 3))
    assert sorted(rows["value"].tolist()) == list(range(400_000))


def test_word_count_hashes_strings(tmp_path: Path) -> None:
    flow = Flow("wordcount")
    (
        flow.source("numbers", Sequence, parallelism=2, stop=100_003)
        .map("words", "zdf.dataflow.examples:to_words", dtype=[["word", "S8"], ["count", "<i8"]])
        .key_by("word")
        .apply("count", KeyedSum, parallelism=3, field="count")
        .sink("counts", dir=str(tmp_path))
    )
    job = flow.to_job()
    with LocalRunner(job) as runner:
        runner.run(timeout=60)
    rows = np.concatenate(files(tmp_path, "wordcount", "counts", 3))
    assert {bytes(k): int(v) for k, v in zip(rows["key"], rows["sum"], strict=True)} == word_counts(
        0, 100_003
    )
    assert verify_flow(job).ok


def test_filter_broadcast_and_rebalance(tmp_path: Path) -> None:
    flow = Flow("shapes")
    evens = (
        flow.source("numbers", Sequence, stop=50_000, keys=10, batch=1000)
        .rebalance()
        .filter("evens", "zdf.dataflow.examples:is_even", parallelism=3)
    )
    evens.broadcast().apply("sum", KeyedSum, parallelism=2).sink("out", dir=str(tmp_path))
    with LocalRunner(flow.to_job()) as runner:
        runner.run(timeout=60)
    values = np.arange(0, 50_000, 2)
    want = np.bincount(values % 10, weights=values, minlength=10).astype(np.int64)
    for rows in files(tmp_path, "shapes", "out", 2):  # broadcast: both saw everything
        assert rows["key"].tolist() == [0, 2, 4, 6, 8]
        assert rows["sum"].tolist() == want[[0, 2, 4, 6, 8]].tolist()


def window_reference(
    n: int, keys: int, size: int, disorder: int
) -> dict[tuple[int, int], tuple[int, int]]:
    rows = events(0, n, keys, 10, disorder)
    starts = rows["ts"] - rows["ts"] % size
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for key in range(keys):
        mine = rows["key"] == key
        uniq, inverse = np.unique(starts[mine], return_inverse=True)
        sums = np.bincount(inverse, weights=rows["value"][mine]).astype(np.int64)
        counts = np.bincount(inverse)
        for w, s, c in zip(uniq.tolist(), sums.tolist(), counts.tolist(), strict=True):
            out[(key, w)] = (s, c)
    return out


@pytest.mark.parametrize("restart", [False, True])
def test_tumbling_windows_match_a_numpy_reference(tmp_path: Path, restart: bool) -> None:
    n, keys, size, disorder = 120_000, 5, 5_000, 300
    flow = Flow("windows")
    (
        flow.source(
            "events",
            "zdf.dataflow.examples:Events",
            parallelism=2,
            stop=n,
            keys=keys,
            disorder=disorder,
            batch=1000,
        )
        .key_by("key")
        .apply("win", TumblingWindow, parallelism=2, size=size, lateness=disorder)
        .sink("out", dir=str(tmp_path))
    )
    job = flow.to_job()
    with LocalRunner(job) as runner:
        runner.start()
        if restart:
            runner.reactor.run(until=lambda: False, deadline=time.monotonic() + 0.03)
            runner.restart(["win-0", "events-1"])
        summaries = runner.run(timeout=60)
    rows = np.concatenate(files(tmp_path, "windows", "out", 2))
    got = {(int(k), int(w)): (int(s), int(c)) for k, w, s, c in rows.tolist()}
    assert len(got) == len(rows), "each (key, window) emitted once"
    assert got == window_reference(n, keys, size, disorder)
    assert all(summaries[f"win-{i}"]["late"] == 0 for i in range(2))
    # The watermark emitted windows during the stream, not only at its end.
    assert sum(summaries[f"win-{i}"]["fired_early"] for i in range(2)) > 0


@pytest.mark.parametrize("seed", range(2))
def test_two_inputs_into_one_keyed_sum_survive_restarts(tmp_path: Path, seed: int) -> None:
    flow = Flow("union")
    low = flow.source("low", Sequence, parallelism=2, stop=300_000, keys=31, batch=2048)
    high = flow.source(
        "high", Sequence, parallelism=3, start=300_000, stop=500_000, keys=31, batch=1500
    )
    flow.apply("sum", KeyedSum, low.key_by("key"), high.key_by("key"), parallelism=2).sink(
        "out", dir=str(tmp_path)
    )
    job = flow.to_job()
    run_with_failures(job, 20 + seed, failures=3, gap=0.08, linger=0.02)
    rows = np.concatenate(files(tmp_path, "union", "out", 2))
    rows = rows[np.argsort(rows["key"])]
    total, count = sequence_sums(0, 500_000, 31)
    assert (rows["sum"] == total).all() and (rows["count"] == count).all()


def test_a_source_serves_a_second_roll_back_from_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """sum-0 and sum-1 restarted together: the first subscription rolls the sources back
    to step 0, the second asks for step 0 of a channel whose unacknowledged steps they
    still hold: they must make step 0 again, not send what they hold."""
    job = sums_flow(tmp_path, stop=600_000, batch=2048)
    with LocalRunner(job) as runner:
        runner.start()
        runner.reactor.run(
            until=lambda: (
                min(h.operator.step for t, h in runner.handles.items() if "sum" in t) > 20
            ),
            deadline=time.monotonic() + 10,
        )
        runner.restart(["sum-0", "sum-1"])
        runner.run(timeout=30)
    check_sums(tmp_path, 600_000, 97)
    assert not [r for r in caplog.records if "bad message" in r.getMessage()]
