"""Dataflow job files and ``Flow``: the same ``JobSpec``, and one-line errors for bad graphs."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zdf.config import read_toml
from zdf.dataflow import Flow
from zdf.dataflow.builtin import FileSink, KeyedSum, Sequence
from zdf.dataflow.dtypes import dtype_from_wire
from zdf.errors import ConfigError
from zdf.jobs import build_job

ROOT = Path(__file__).resolve().parents[2]

SUMS: dict[str, Any] = {
    "job-type": "dataflow",
    "flow-id": "sums",
    "checkpoint-interval": "1s",
    "task": [
        {
            "name": "numbers",
            "operator": "zdf.dataflow.builtin:Sequence",
            "parallelism": 2,
            "params": {"start": 0, "stop": 10000, "keys": 100},
        },
        {
            "name": "sum",
            "operator": "zdf.dataflow.builtin:KeyedSum",
            "parallelism": 3,
            "inputs": [{"from": "numbers", "partition": "hash", "key": "key"}],
            "params": {"field": "value"},
        },
        {
            "name": "out",
            "operator": "zdf.dataflow.builtin:FileSink",
            "parallelism": 3,
            "inputs": [{"from": "sum", "partition": "forward"}],
            "params": {"dir": "/tmp/dataflow"},
        },
    ],
}


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(SUMS)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_job(data, "job.toml")
    text = str(info.value)
    assert "\n" not in text and text.startswith("job.toml: ")
    return text


def test_the_file_and_the_flow_give_the_same_spec() -> None:
    from_file = build_job(SUMS, "job.toml")
    flow = Flow("sums")
    (
        flow.source("numbers", Sequence, parallelism=2, start=0, stop=10000, keys=100)
        .key_by("key")
        .apply("sum", KeyedSum, parallelism=3, field="value")
        .sink("out", FileSink, dir="/tmp/dataflow")
    )
    assert flow.to_job().to_dict() == from_file.to_dict()
    ids = [t.task_id for t in from_file.tasks]
    assert ids == [f"numbers-{i}" for i in range(2)] + [f"sum-{i}" for i in range(3)] + [
        f"out-{i}" for i in range(3)
    ]
    sum1 = next(t for t in from_file.tasks if t.task_id == "sum-1")
    inputs = sum1.params["flow"]["inputs"]
    # hash: instance 1 reads channel 1 of both upstream instances; KeyedSum took the key.
    assert [(i["task"], i["channel"]) for i in inputs] == [("numbers-0", 1), ("numbers-1", 1)]
    assert sum1.params["flow"]["params"]["key"] == "key"
    out_dtype = dtype_from_wire(sum1.params["flow"]["dtype"])
    assert out_dtype.names == ("key", "sum", "count") and out_dtype["sum"] == np.int64
    assert sum1.params["done-after"] == ["out-1"]
    assert (
        sum1.group == "sum-1"
        and next(t for t in from_file.tasks if t.task_id == "out-1").group == "sum-1"
    )


def test_the_shipped_example_files_are_valid() -> None:
    for name in ("dataflow-sums.toml", "wordcount.toml"):
        path = ROOT / "configs" / name
        spec = build_job(read_toml(str(path)), str(path))
        assert spec.job_type == "dataflow" and spec.tasks


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["task", 1, "inputs", 0, "from"], "nums", "task 'sum': input from unknown task 'nums'"),
        (["task", 1, "operator"], "zdf.dataflow.builtin:Nope", "task 'sum': operator"),
        (["task", 1, "operator"], "zdf.jobs.counter:Counter", "not a zdf.dataflow operator"),
        (["task", 1, "inputs", 0, "key"], "kee", "hash key: 'numbers''s output has no field 'kee'"),
        (["task", 1, "inputs", 0, "key"], None, "a hash input needs 'key'"),
        (["task", 1, "params", "field"], "price", "has no field 'price'"),
        (["task", 2, "inputs", 0, "partition"], "shuffle", "partition must be one of"),
        (["task", 2, "parallelism"], 2, "a forward input needs the same parallelism"),
        (["task", 0, "name"], "../etc", "must be 1-64 letters"),
        (["task", 0, "name"], "..", "not '.' or '..'"),
        (["task", 2, "name"], "a/b", "must be 1-64 letters"),
        (["flow-id"], ".", "'flow-id' must be"),
        (["task", 0, "params", "stop"], "many", "param 'stop' must be an integer"),
        (["task", 1, "parallelism"], 0, "'parallelism' must be an integer from 1"),
        (["task", 1, "colour"], "red", "unknown key 'colour'"),
    ],
)
def test_bad_graphs_are_refused_in_one_line(path: list[Any], value: Any, expected: str) -> None:
    assert expected in error_of(with_change(path, value))


def test_reading_a_sink_is_refused() -> None:
    data = copy.deepcopy(SUMS)
    data["task"].append(
        {"name": "more", "operator": "zdf.dataflow.builtin:FileSink", "inputs": [{"from": "out"}]}
    )
    assert "task 'more': input from 'out', which has no output (a sink)" in error_of(data)


def test_a_cycle_is_refused() -> None:
    data = copy.deepcopy(SUMS)
    data["task"].append(
        {
            "name": "loop",
            "operator": "zdf.dataflow.builtin:Map",
            "params": {"fn": "zdf.dataflow.examples:to_words"},
            "inputs": [{"from": "again"}],
        }
    )
    data["task"].append(
        {
            "name": "again",
            "operator": "zdf.dataflow.builtin:Filter",
            "params": {"fn": "zdf.dataflow.examples:is_even"},
            "inputs": [{"from": "loop"}],
        }
    )
    assert "cycle through tasks again, loop" in error_of(data)


def test_dtype_mismatch_between_stages_is_refused() -> None:
    flow = Flow("mismatch")
    words = flow.source("numbers", Sequence, stop=100).map(
        "words", "zdf.dataflow.examples:to_words", dtype=[["word", "S8"], ["count", "<i8"]]
    )
    numbers = flow.source("more", Sequence, stop=100)
    flow.apply("both", KeyedSum, words, numbers, key="word", field="count")
    with pytest.raises(ConfigError, match="inputs of different dtypes"):
        flow.to_job()
    flow = Flow("notanumber")
    flow.source("numbers", Sequence, stop=100).map(
        "words", "zdf.dataflow.examples:to_words", dtype=[["word", "S8"], ["count", "<i8"]]
    ).key_by("word").apply("sum", KeyedSum, field="word")
    with pytest.raises(ConfigError, match=re.escape("field 'word' is |S8, not a number")):
        flow.to_job()
