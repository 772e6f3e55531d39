"""Log lines: JSON that names process and task, and repeated warnings held back."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest

from zdf.jobs.benchrun import start_bench
from zdf.localcluster import LocalCluster, wait_until
from zdf.observe.logs import JsonFormatter, RateLimit, TextFormatter, task_fields

pytestmark = pytest.mark.timeout(120)


def capture(
    formatter: logging.Formatter, limit: RateLimit | None = None
) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(limit or RateLimit())
    logger = logging.getLogger(f"zdf.test.{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_name_the_process_and_the_task() -> None:
    logger, out = capture(JsonFormatter("executor[exec-1]"))
    logger.info("plain")
    logger.warning("task %s slow", "sink-0", extra=task_fields("job-1", "sink-0", 2))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["process"] == "executor[exec-1]" and first["msg"] == "plain"
    assert "job" not in first
    assert (second["job"], second["task"], second["attempt"]) == ("job-1", "sink-0", 2)
    assert second["level"] == "warning" and second["msg"] == "task sink-0 slow"


def test_text_lines_name_the_task() -> None:
    logger, out = capture(TextFormatter("worker[exec-1/w0]"))
    logger.info("started", extra=task_fields("job-1", "sink-0", 1))
    assert "worker[exec-1/w0] INFO [job-1/sink-0#1] started" in out.getvalue()


def test_a_repeated_warning_is_one_line_per_interval() -> None:
    now = [100.0]
    logger, out = capture(TextFormatter("p"), RateLimit(5.0, clock=lambda: now[0]))
    for i in range(50):  # one per task, as a checkpoint warning while the master is away
        logger.warning("checkpoint of %s not taken now", f"task-{i}")
    logger.info("infos are never held back")
    logger.info("infos are never held back")
    assert out.getvalue().count("checkpoint of") == 1
    assert out.getvalue().count("infos are never") == 2
    now[0] += 4.9
    logger.warning("checkpoint of %s not taken now", "task-1")
    assert out.getvalue().count("checkpoint of") == 1
    now[0] += 0.2
    logger.warning("checkpoint of %s not taken now", "task-0")
    lines = [line for line in out.getvalue().splitlines() if "checkpoint of" in line]
    assert len(lines) == 2
    assert lines[1].endswith("(50 more like this held back)")


@pytest.mark.timeout(150)
def test_json_logs_of_a_cluster_and_quiet_warnings_while_the_master_is_away(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(str(tmp_path / "c"), executors=1, workers=2, log_format="json")
    try:
        cluster.start()
        run = start_bench(
            cluster,
            str(tmp_path / "sink"),
            rate=400,
            **{"checkpoint-interval": "100ms", "rcd-cnt": 2400},
        )
        run.wait_sunk(0.2, timeout=60)
        master = cluster.masters[0]
        cluster.kill(master)
        stopped = time.monotonic()
        executor_log = Path(cluster.executors[0].log_path)
        # The workers' checkpoints fail while no master answers.
        wait_until(lambda: "checkpoint of" in executor_log.read_text(), 30, "a warning")
        wait_until(lambda: time.monotonic() - stopped > 4, 10, "4 s away")
        master = cluster.start_master(0)
        run.wait_end(120)
        lines = [json.loads(line) for line in executor_log.read_text().splitlines()]
        processes = {line["process"] for line in lines}
        assert "executor[exec-1]" in processes
        assert {"worker[exec-1/w0]", "worker[exec-1/w1]"} & processes
        warnings = [line for line in lines if line["msg"].startswith("checkpoint of")]
        assert all({"job", "task", "attempt"} <= line.keys() for line in warnings)
        # Each worker: at most one such line per 5 s (the master was away about 4-5 s).
        per_process: dict[str, int] = {}
        for line in warnings:
            per_process[line["process"]] = per_process.get(line["process"], 0) + 1
        assert max(per_process.values()) <= 2, per_process
        master_lines = [json.loads(x) for x in Path(master.log_path).read_text().splitlines()]
        submitted = [x for x in master_lines if "submitted" in x["msg"]]
        assert submitted and submitted[0]["job"] == run.job_id
    finally:
        cluster.stop()
