"""The benchmark job on the public dataflow API (``engine="flow"``): the same records as the
first operators, the DDL barrier, backpressure from a sink that holds rows, and the graph."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from zdf.cli.verify_sink import verify
from zdf.dataflow.graph import build_dataflow_job
from zdf.errors import ConfigError
from zdf.jobs.bench import build_bench_job, load_bench_config
from zdf.jobs.benchflow import bench_flow
from zdf.records import DATA, SINK_DTYPE
from zdf.runtime.bench.flowsink import Sink
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.producer import producer_batch, producer_batch_by_stream
from zdf.runtime.bench.stages import Producer, Receive
from zdf.runtime.local import LocalRunner

from .conftest import SMALL, JobFactory, replace_flow_params, replace_operator

pytestmark = pytest.mark.timeout(60)


class GatedFlowReceive(Receive):
    """A receive that takes no step while ``gated`` (a stalled stream)."""

    gated = True

    def can_step(self) -> bool:
        return not self.gated

    def open_gate(self) -> None:
        self.gated = False
        self.pump()


@pytest.mark.parametrize(
    "shape", [(10, 3, 100_000, 1000, 4096), (4, 2, 20_000, 1000, 500), (3, 5, 1001, 7, 3)]
)
def test_round_starts_are_the_binlog_rounds(shape: tuple[int, int, int, int, int]) -> None:
    tables, streams, rcd_cnt, ddl_freq, batch = shape
    p = BenchParams("f", tables, streams, rcd_cnt, ddl_freq, batch, 0.0, "/nonexistent", 8)
    for s in range(streams):
        sizes = [
            sum(len(producer_batch(p, t, k, s, 0)) for t in range(tables))
            for k in range(p.producer_batches)
        ]
        assert p.round_rows(s).tolist() == sizes
        assert p.round_starts(s).tolist() == np.concatenate([[0], np.cumsum(sizes)]).tolist()


@pytest.mark.parametrize(
    "shape", [(4, 3, 20_000, 1000, 4096), (3, 5, 1001, 7, 3), (2, 1, 50, 9, 20)]
)
def test_a_producer_batch_routes_as_slices_of_the_per_stream_batches(
    shape: tuple[int, int, int, int, int],
) -> None:
    """The flow producer's batch, cut by its route, is each stream's ``producer_batch``
    exactly; every piece is a view of the batch (no copy on the custom edge)."""
    tables, streams, rcd_cnt, ddl_freq, batch = shape
    p = BenchParams("f", tables, streams, rcd_cnt, ddl_freq, batch, 0.0, "/nonexistent", 8)
    for t in range(tables):
        producer = Producer.__new__(Producer)  # route() needs only its params
        producer.bench, producer.instance = p, t
        for k in range(p.producer_batches):
            rows = producer_batch_by_stream(p, t, k, 7)
            pieces = producer.route(rows, streams, k)
            for s, piece in enumerate(pieces):
                assert piece.tobytes() == producer_batch(p, t, k, s, 7).tobytes()
                assert piece.base is rows or piece.base is rows.base
            with pytest.raises(ValueError, match="expected"):
                producer.route(rows[1:], streams, k)


def test_a_job_file_builds_the_stages_as_a_dataflow_graph() -> None:
    data = {**SMALL, "sink-dir": "/nonexistent"}
    job = build_bench_job(data, "b.toml")
    ops = {t.task_id: t.operator for t in job.tasks}
    assert ops["producer-0"] == "zdf.runtime.bench.stages:Producer"
    assert ops["sink-1"] == "zdf.runtime.bench.flowsink:Sink"
    assert job.job_type == "bench"
    # The stages are a plain dataflow job file: the same tasks and wiring.
    table = bench_flow(load_bench_config(data, "b.toml")).to_dict()
    assert table["job-type"] == "dataflow"
    as_file = build_dataflow_job(table, "bench-as-dataflow.toml")
    flows = {t.task_id: t.params["flow"] for t in as_file.tasks}
    assert {t.task_id: t.params["flow"] for t in job.tasks if t.kind != "coordinator"} == flows
    binlog = flows["binlog-0"]
    assert [i["task"] for i in binlog["inputs"]] == [f"producer-{t}" for t in range(3)]
    assert flows["producer-2"]["outputs"][0]["partition"] == "custom"
    groups = {t.task_id: (t.group, t.slot) for t in job.tasks}
    assert groups["sink-1"] == groups["binlog-1"] == ("stream-1", "")
    assert groups["producer-2"] == ("", "stream-0")


def test_a_custom_edge_needs_the_senders_route() -> None:
    table = {
        "job-type": "dataflow",
        "flow-id": "f",
        "task": [
            {"name": "numbers", "operator": "zdf.dataflow.builtin:Sequence", "params": {"stop": 9}},
            {
                "name": "sum",
                "operator": "zdf.dataflow.builtin:KeyedSum",
                "inputs": [{"from": "numbers", "partition": "custom"}],
                "params": {"field": "value", "key": "key"},
            },
        ],
    }
    with pytest.raises(ConfigError, match=r"custom input needs 'numbers'.*route"):
        build_dataflow_job(table, "j.toml")


def records(path: str) -> list[tuple[int, ...]]:
    """A sink file's records without their times, sorted (the order between tables
    within a file follows the barriers' timing)."""
    rows = np.fromfile(path, SINK_DTYPE)
    fields = [rows[f].tolist() for f in ("tid", "gtid", "pk", "tp", "schema_ver")]
    return sorted(zip(*fields, strict=True))


def test_both_engines_write_the_same_records(tmp_path: Path) -> None:
    files = {}
    for engine in ("classic", "flow"):
        data = {**SMALL, "sink-dir": str(tmp_path / engine), "servers": 3, "ddl-freq": 150}
        with LocalRunner(build_bench_job(data, "b.toml", engine=engine)) as runner:
            summary = runner.run(timeout=30)["coordinator"]
        config = load_bench_config(data, "b.toml")
        report = verify(config)
        assert report.ok, report.violations
        assert summary["records"] == 3 * 2000 and summary["barriers"] == 3 * 13
        out = os.path.join(config.sink_dir, config.flow_id)
        files[engine] = [records(os.path.join(out, f"sink_{s}.bin")) for s in range(3)]
    assert files["flow"] == files["classic"]  # the same gtids, in the same files


def test_a_stalled_stream_holds_every_barrier_and_bounds_what_the_sinks_hold(
    small_job: JobFactory,
) -> None:
    job, config = small_job(servers=3, **{"rcd-cnt": 3000, "ddl-freq": 300, "batch-size": 64})
    job = replace_operator(job, "receive-1", f"{GatedFlowReceive.__module__}:GatedFlowReceive")
    for s in (0, 2):
        job = replace_flow_params(job, f"sink-{s}", **{"max-held": 256})
    with LocalRunner(job) as runner:
        runner.start()
        ops = [runner.handles[f"sink-{s}"].operator for s in range(3)]
        assert all(isinstance(op, Sink) for op in ops)
        sinks: list[Sink] = ops  # type: ignore[assignment]

        def held_back() -> bool:  # streams 0 and 2 stopped at a DDL of every table, and full
            return all(
                getattr(sinks[s], "_started", False)
                and all(sinks[s].gate.stopped)
                and not sinks[s].can_step()
                for s in (0, 2)
            )

        runner.reactor.run(until=held_back, deadline=time.monotonic() + 20)
        assert held_back()
        for _ in range(50):
            runner.reactor.run_once(0.002)
        round_rows = config.batch_size * config.table_num
        for s in (0, 2):
            sink = sinks[s]
            assert not sink.barrier.known.any()  # no barrier completed
            rows = np.fromfile(f"{config.sink_dir}/{config.flow_id}/sink_{s}.bin", SINK_DTYPE)
            assert len(rows) > 0 and (rows["tp"] == DATA).all()
            assert (rows["schema_ver"] == 0).all()  # nothing past the barrier anywhere
            assert sink.gate.held_rows < sink.max_held + round_rows
            # It takes no step: what comes waits unacknowledged in its input (the
            # window), and the stages above it stop making steps.
            assert sum(len(inp.queue) for inp in sink.inputs) <= 8
            syncer = runner.handles[f"syncer-{s}"].operator
            assert syncer.step - sink.step <= 8 + 4 + 1  # window + MAX_PENDING + one in hand
        gate = runner.handles["receive-1"].operator
        assert isinstance(gate, GatedFlowReceive)
        gate.open_gate()
        runner.run(timeout=30)
    report = verify(config)
    assert report.ok, report.violations
