"""The DDL barrier with a stalled stream and with a lagging one."""

from __future__ import annotations

import time

import numpy as np
import pytest

from zdf.cli.verify_sink import verify
from zdf.records import DATA, DDL, SINK_DTYPE
from zdf.runtime.bench.coordinator import Coordinator
from zdf.runtime.bench.syncer import Syncer
from zdf.runtime.local import LocalRunner

from .conftest import JobFactory, replace_operator
from .helpers import GatedReceive, SlowReceive

pytestmark = pytest.mark.timeout(60)


def written(path: str) -> np.ndarray:
    return np.fromfile(path, dtype=SINK_DTYPE)


def test_a_stalled_stream_holds_every_barrier_and_nothing_else(small_job: JobFactory) -> None:
    job, config = small_job(servers=3, **{"rcd-cnt": 3000, "ddl-freq": 300})
    job = replace_operator(job, "receive-1", f"{GatedReceive.__module__}:GatedReceive")
    with LocalRunner(job) as runner:
        runner.start()
        coord = runner.handles["coordinator"].operator
        assert isinstance(coord, Coordinator)
        first_barriers = [(t, 1) for t in range(config.table_num)]
        # Streams 0 and 2 reach DDL (t, 1) of every table; stream 1 is stalled before any.
        runner.reactor.run(
            until=lambda: all(coord.arrived.get(b) == {0, 2} for b in first_barriers),
            deadline=time.monotonic() + 20,
        )
        assert all(coord.arrived.get(b) == {0, 2} for b in first_barriers)
        for _ in range(50):
            runner.reactor.run_once(0.002)
        assert not coord.completed and not coord.writing
        for s in (0, 2):
            rows = written(f"{config.sink_dir}/{config.flow_id}/sink_{s}.bin")
            assert len(rows) > 0 and (rows["tp"] == DATA).all()
            assert (rows["schema_ver"] == 0).all()  # nothing past the barrier anywhere
            syncer = runner.handles[f"syncer-{s}"].operator
            assert isinstance(syncer, Syncer)
            assert syncer.blocked.all()
            assert syncer.held_rows <= syncer.max_held + 4 * config.batch_size * config.table_num
        gate = runner.handles["receive-1"].operator
        assert isinstance(gate, GatedReceive)
        gate.open_gate()
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations


def test_a_lagging_stream_only_delays(small_job: JobFactory) -> None:
    job, config = small_job(servers=3, **{"batch-size": 64})
    job = replace_operator(job, "receive-2", f"{SlowReceive.__module__}:SlowReceive", delay=0.001)
    with LocalRunner(job) as runner:
        runner.run(timeout=40)
    report = verify(config)
    assert report.ok, report.violations


def test_every_ddl_is_written_once_and_after_all_streams_arrived(small_job: JobFactory) -> None:
    job, config = small_job(servers=3)
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
    assert verify(config).ok
