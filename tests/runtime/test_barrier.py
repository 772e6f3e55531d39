"""The DDL barrier on a whole job: stalled, lagging and skewed streams, per-table order."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zdf.cli.verify_sink import verify
from zdf.records import DATA, DDL, SINK_DTYPE
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sink import Sink
from zdf.runtime.local import LocalRunner

from .conftest import JobFactory, replace_operator
from .helpers import GatedReceive, SlowReceive, StallTableSink

pytestmark = pytest.mark.timeout(60)


def written(path: str) -> np.ndarray:
    return np.fromfile(path, dtype=SINK_DTYPE)


def sinks(runner: LocalRunner, streams: int) -> list[Sink]:
    ops = [runner.handles[f"sink-{s}"].operator for s in range(streams)]
    assert all(isinstance(op, Sink) for op in ops)
    return ops  # type: ignore[return-value]


def open_receive_1(runner: LocalRunner) -> None:
    """Let the stalled stream 1 (``GatedReceive``) go on."""
    gate = runner.handles["receive-1"].operator
    assert isinstance(gate, GatedReceive)
    gate.open_gate()


def test_a_stalled_stream_holds_every_barrier_and_nothing_else(classic_job: JobFactory) -> None:
    job, config = classic_job(servers=3, **{"rcd-cnt": 3000, "ddl-freq": 300})
    job = replace_operator(job, "receive-1", f"{GatedReceive.__module__}:GatedReceive")
    p = BenchParams.from_params(job.tasks[0].params)
    with LocalRunner(job) as runner:
        runner.start()
        first_barriers = [(t, 1) for t in range(config.table_num)]

        def arrived(t: int, v: int) -> set[int]:
            ops = sinks(runner, 3)
            barrier = getattr(ops[p.writer(t, v)], "barrier", None)
            return set() if barrier is None else barrier.arrived.get((t, v), set())

        # Streams 0 and 2 reach DDL (t, 1) of every table; stream 1 is stalled before any.
        runner.reactor.run(
            until=lambda: all(arrived(*b) == {0, 2} for b in first_barriers),
            deadline=time.monotonic() + 20,
        )
        assert all(arrived(*b) == {0, 2} for b in first_barriers)
        for _ in range(50):
            runner.reactor.run_once(0.002)
        for op in sinks(runner, 3):
            assert not op.barrier.known.any()  # no barrier completed
        for s in (0, 2):
            rows = written(f"{config.sink_dir}/{config.flow_id}/sink_{s}.bin")
            assert len(rows) > 0 and (rows["tp"] == DATA).all()
            assert (rows["schema_ver"] == 0).all()  # nothing past the barrier anywhere
            sink = sinks(runner, 3)[s]
            assert all(sink.gate.stopped)
            assert sink.gate.held_rows <= sink.max_held + config.batch_size * config.table_num
        open_receive_1(runner)
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations


def test_one_stalled_table_does_not_hold_back_the_others(classic_job: JobFactory) -> None:
    """Sink 1 withholds its arrivals at table 0's DDLs: only table 0 waits, everywhere."""
    job, config = classic_job(servers=3, **{"rcd-cnt": 3000, "ddl-freq": 300})
    job = replace_operator(job, "sink-1", f"{StallTableSink.__module__}:StallTableSink")
    versions = config.rcd_cnt // config.ddl_freq
    with LocalRunner(job) as runner:
        runner.start()

        def others_done() -> bool:
            ops = sinks(runner, 3)
            return all(
                hasattr(op, "barrier") and (op.barrier.known[1:] == versions).all() for op in ops
            )

        runner.reactor.run(until=others_done, deadline=time.monotonic() + 20)
        assert others_done()  # every barrier of tables 1 and 2 completed
        for s, op in enumerate(sinks(runner, 3)):
            assert op.barrier.known[0] == 0 and op.gate.stopped[0]
            rows = written(f"{config.sink_dir}/{config.flow_id}/sink_{s}.bin")
            t0 = rows[rows["tid"] == 0]
            assert (t0["tp"] == DATA).all() and (t0["schema_ver"] == 0).all()
        stalled = sinks(runner, 3)[1]
        assert isinstance(stalled, StallTableSink)
        stalled.open_gate()
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations


def test_a_lagging_stream_only_delays(classic_job: JobFactory) -> None:
    job, config = classic_job(servers=3, **{"batch-size": 64})
    job = replace_operator(job, "receive-2", f"{SlowReceive.__module__}:SlowReceive", delay=0.001)
    with LocalRunner(job) as runner:
        runner.run(timeout=40)
    report = verify(config)
    assert report.ok, report.violations


def test_skewed_streams_with_small_held_limits(classic_job: JobFactory) -> None:
    """Two streams lag by different amounts and the sinks may hold little: no deadlock."""
    job, config = classic_job(servers=3, **{"batch-size": 64, "table-num": 4})
    job = replace_operator(job, "receive-1", f"{SlowReceive.__module__}:SlowReceive", delay=0.003)
    job = replace_operator(job, "receive-2", f"{SlowReceive.__module__}:SlowReceive", delay=0.001)
    for s in range(3):
        job = replace_operator(job, f"sink-{s}", "zdf.runtime.bench.sink:Sink", **{"max-held": 64})
    with LocalRunner(job) as runner:
        runner.run(timeout=40)
    report = verify(config)
    assert report.ok, report.violations


def test_every_ddl_is_written_once_in_order_after_all_streams_arrived(
    classic_job: JobFactory,
) -> None:
    job, config = classic_job(servers=3)
    with LocalRunner(job) as runner:
        runner.run(timeout=30)
    files = [written(f"{config.sink_dir}/{config.flow_id}/sink_{s}.bin") for s in range(3)]
    ddl_files = {
        (int(t), int(v)): s
        for s, rows in enumerate(files)
        for t, v in zip(
            rows["tid"][rows["tp"] == DDL], rows["schema_ver"][rows["tp"] == DDL], strict=True
        )
    }
    assert len(ddl_files) == config.table_num * (config.rcd_cnt // config.ddl_freq)
    assert set(ddl_files.values()) == {0, 1, 2}  # the writers are spread over the sinks
    ddl = np.concatenate([rows[rows["tp"] == DDL] for rows in files])
    for t in range(config.table_num):
        mine = np.sort(ddl[ddl["tid"] == t], order="sink_ts")
        assert (np.diff(mine["schema_ver"]) == 1).all()  # a table's DDLs in version order
    assert verify(config).ok


def test_a_sink_takes_no_input_above_max_held(classic_job: JobFactory) -> None:
    """While a barrier cannot complete, a sink holds at most ``max-held`` rows (plus the
    batch that crossed it) and leaves the rest unacknowledged upstream."""
    job, config = classic_job(servers=3, **{"rcd-cnt": 3000, "ddl-freq": 300})
    job = replace_operator(job, "receive-1", f"{GatedReceive.__module__}:GatedReceive")
    job = replace_operator(job, "sink-0", "zdf.runtime.bench.sink:Sink", **{"max-held": 64})
    with LocalRunner(job) as runner:
        runner.start()
        sink = sinks(runner, 3)[0]

        def stopped_taking() -> bool:
            return hasattr(sink, "gate") and len(sink._inbox) > 0

        runner.reactor.run(until=stopped_taking, deadline=time.monotonic() + 20)
        assert stopped_taking()
        for _ in range(20):
            runner.reactor.run_once(0.002)
        message_rows = config.batch_size * config.table_num
        assert 64 <= sink.gate.held_rows <= 64 + message_rows
        assert len(sink._inbox) <= config.window and sink.inp.unacked == len(sink._inbox)
        open_receive_1(runner)
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations
