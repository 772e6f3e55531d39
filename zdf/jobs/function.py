"""The ``function`` job type: N tasks that each call a Python function.

    job-type = "function"
    name = "squares"
    function = "zdf.jobs.examples:square"   # module:name, installed on the executors
    tasks = 4                                # how many calls
    args = [3]                               # positional arguments (task i may use "{i}")
    kwargs = {}                              # keyword arguments
    max-retries = 3

The function runs in an executor's worker process; its return value (if msgpack
can carry it, else its repr) is the task's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zdf.config import int_range, key, load_config, parse_name, parse_str
from zdf.jobs.spec import JobSpec, TaskSpec


def _parse_path(value: Any) -> str:
    text = parse_str(value)
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr.isidentifier():
        raise ValueError("an import path module:function")
    return text


def _parse_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("a list")
    return value


def _parse_table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a table")
    return value


@dataclass(frozen=True)
class FunctionJobConfig:
    job_type: str = key("job-type", parse_str, "function", "function")
    name: str = key("name", parse_name, "function-job", "the job's name")
    function: str = key("function", _parse_path, "", "module:function to call")
    tasks: int = key("tasks", int_range(1, 100_000), 1, "how many calls")
    args: list[Any] = key("args", _parse_list, [], "positional arguments")
    kwargs: dict[str, Any] = key("kwargs", _parse_table, {}, "keyword arguments")
    max_retries: int = key("max-retries", int_range(0, 100), 3, "retries of a failed call")

    def validate(self) -> None:
        if not self.function:
            raise ValueError("key 'function': expected an import path module:function, got nothing")


def build_function_job(data: dict[str, Any], source: str) -> JobSpec:
    config = load_config(FunctionJobConfig, source, data=data, env={})
    tasks = [
        TaskSpec(
            task_id=f"call-{i}",
            kind="function",
            operator=config.function,
            params={
                "args": [_fill(a, i) for a in config.args],
                "kwargs": {k: _fill(v, i) for k, v in config.kwargs.items()},
                "max_retries": config.max_retries,
            },
        )
        for i in range(config.tasks)
    ]
    return JobSpec(config.name, "function", tasks)


def _fill(value: Any, index: int) -> Any:
    return index if value == "{i}" else value
