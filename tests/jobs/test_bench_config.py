"""Bench job files: the builder's tasks and its one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from zdf.errors import ConfigError
from zdf.jobs import JOB_TYPES, build_job
from zdf.jobs.bench import load_bench_config
from zdf.jobs.spec import JobSpec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load(name: str) -> dict[str, Any]:
    with open(CONFIGS / name, "rb") as fh:
        return tomllib.load(fh)


def test_example_config_builds_the_original_demo() -> None:
    job = build_job(load("bench-example.toml"), "configs/bench-example.toml")
    ids = [t.task_id for t in job.tasks]
    expected = (
        ["coordinator"]
        + [f"producer-{t}" for t in range(10)]
        + [f"{kind}-{s}" for s in range(3) for kind in ("binlog", "receive", "syncer", "sink")]
    )
    assert sorted(ids) == sorted(expected) and len(ids) == 23
    assert job.name == "feed1" and job.job_type == "bench"
    assert job.settings["sink-dir"] == "/tmp/dataflow"
    # The spec survives the trip to the master (msgpack-able plain data).
    assert JobSpec.from_dict(job.to_dict()) == job
    binlog = next(t for t in job.tasks if t.task_id == "binlog-2")
    assert binlog.params["server"] == "127.0.0.1:10252" and binlog.params["stream"] == 2
    # A stream's stages are one placement group; producers and the coordinator none.
    groups = {t.task_id: t.group for t in job.tasks}
    for s in range(3):
        assert {groups[f"{k}-{s}"] for k in ("binlog", "receive", "syncer", "sink")} == {
            f"stream-{s}"
        }
    assert groups["coordinator"] == groups["producer-0"] == ""


def test_small_config_and_a_count_of_servers() -> None:
    cfg = load_bench_config(load("bench-small.toml"), "configs/bench-small.toml")
    assert cfg.streams == 2 and cfg.table_num == 4
    assert load_bench_config({"flow-id": "x", "servers": "5"}, "f").streams == 5


@pytest.mark.parametrize(
    "keys,fragment",
    [
        ({"table-num": 0}, "key 'table-num': expected an integer from 1 to 1000"),
        ({"servers": ["nope"]}, "key 'servers': expected a list of host:port"),
        ({"servers": 0}, "key 'servers'"),
        ({"rate": -1}, "key 'rate'"),
        ({"checkpoint-interval": "soon"}, "key 'checkpoint-interval'"),
        ({"tables": 3}, "unknown key 'tables'"),
        ({"flow-id": "a b"}, "key 'flow-id'"),
        ({"job-type": "bench", "flow-id": ""}, "flow-id"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(keys: dict[str, Any], fragment: str) -> None:
    data = {"flow-id": "f", **keys}
    with pytest.raises(ConfigError) as err:
        build_job(data, "jobs/bad.toml")
    message = str(err.value)
    assert message.startswith("jobs/bad.toml: ")
    assert fragment in message
    assert "\n" not in message


def test_job_types_dispatch() -> None:
    with pytest.raises(ConfigError, match="missing key 'job-type'"):
        build_job({"name": "x"}, "j.toml")
    with pytest.raises(ConfigError, match="key 'job-type': expected one of"):
        build_job({"job-type": "nope"}, "j.toml")
    calls = []
    JOB_TYPES["probe"] = lambda data, source: (
        calls.append(source)
        or build_job(  # type: ignore[func-returns-value]
            {"flow-id": "p"}, source
        )
    )
    try:
        assert build_job({"job-type": "probe"}, "p.toml").name == "p"
        assert calls == ["p.toml"]
    finally:
        del JOB_TYPES["probe"]
