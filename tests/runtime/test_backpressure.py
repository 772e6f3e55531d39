"""A slow sink must stop the whole chain: every queue stays bounded while it lags."""

from __future__ import annotations

from collections import defaultdict

import pytest

from zdf.cli.verify_sink import verify
from zdf.runtime.bench.binlog import Binlog
from zdf.runtime.bench.producer import Producer
from zdf.runtime.bench.receive import Receive
from zdf.runtime.bench.sink import Sink
from zdf.runtime.bench.syncer import Syncer
from zdf.runtime.local import LocalRunner

from .conftest import JobFactory, replace_operator
from .helpers import SlowSink

pytestmark = pytest.mark.timeout(90)


def test_slow_sink_bounds_every_queue(classic_job: JobFactory) -> None:
    keys = {"rcd-cnt": 20000, "ddl-freq": 1000, "batch-size": 128, "window": 4, "table-num": 2}
    job, config = classic_job(**keys)
    job = replace_operator(job, "sink-0", f"{SlowSink.__module__}:SlowSink", delay=0.002)
    peaks: dict[str, int] = defaultdict(int)
    with LocalRunner(job) as runner:
        runner.start()
        ops = {task: h.operator for task, h in runner.handles.items()}

        def sample() -> None:
            def peak(name: str, value: int) -> None:
                peaks[name] = max(peaks[name], value)

            syncer, receive, binlog = ops["syncer-0"], ops["receive-0"], ops["binlog-0"]
            assert isinstance(syncer, Syncer) and isinstance(receive, Receive)
            assert isinstance(binlog, Binlog)
            peak("syncer.inbox", len(syncer._inbox))
            sink = ops["sink-0"]
            assert isinstance(sink, Sink)
            if hasattr(sink, "gate"):
                peak("sink.held", sink.gate.held_rows)
                peak("sink.inbox", len(sink._inbox))
            peak("syncer.pending", syncer._pending_rows)
            peak("receive.inbox", len(receive._inbox))
            peak("receive.pending", receive._pending_rows)
            peak("binlog.unsent", binlog.end - binlog.send_pos)
            for t in range(config.table_num):
                producer = ops[f"producer-{t}"]
                assert isinstance(producer, Producer)
                peak("producer.ahead", producer.next[0] - binlog.round)

        timer = runner.reactor.call_every(0.002, sample)
        runner.run(timeout=60)
        timer.cancel()
    assert verify(config).ok
    syncer_max_rows = 4 * config.batch_size  # StreamOperator's message size
    round_rows = config.table_num * config.batch_size  # one binlog round on one stream
    assert peaks["syncer.inbox"] <= config.window
    assert peaks["receive.inbox"] <= config.window
    assert peaks["syncer.pending"] <= 2 * syncer_max_rows + round_rows
    assert peaks["sink.held"] <= 16 * config.batch_size + round_rows
    assert peaks["sink.inbox"] <= config.window
    assert peaks["binlog.unsent"] <= 4 * config.batch_size * config.table_num + round_rows
    # A producer is never more than its window (plus the batch being merged) ahead.
    assert peaks["producer.ahead"] <= config.window + 1
