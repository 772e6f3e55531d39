"""``Flow``: a dataflow job built in Python, the same table a job file holds.

    from zdf.dataflow import Flow
    from zdf.dataflow.builtin import FileSink, KeyedSum, Sequence

    flow = Flow("sums")
    (flow.source("numbers", Sequence, parallelism=2, stop=10_000_000, keys=1000)
         .key_by("key")
         .apply("sum", KeyedSum, parallelism=3, field="value")
         .sink("out", FileSink, dir="/tmp/dataflow"))
    job_id = client.submit_job(flow)

A ``Stream`` is a task's output; ``key_by(field)``, ``broadcast()`` and
``rebalance()`` choose how the next task's instances share it (``forward`` when
none is chosen, which keeps the parallelism). ``Flow.to_dict()`` is the job
file's table and ``Flow.to_job()`` runs it through the job-file path
(``zdf.dataflow.graph``), so a flow and its file give the same ``JobSpec`` and
the same one-line errors.
"""

from __future__ import annotations

from typing import Any

from zdf.jobs.spec import JobSpec

DEFAULT_SINK = "zdf.dataflow.builtin:FileSink"


def operator_path(op: type | str) -> str:
    """``module:Class`` of an operator class (or the path given)."""
    if isinstance(op, str):
        return op
    return f"{op.__module__}:{op.__qualname__}"


class Stream:
    """The output of task ``name`` of ``flow``, with how the next task reads it."""

    def __init__(
        self, flow: Flow, name: str, parallelism: int, partition: str = "forward", key: str = ""
    ) -> None:
        self.flow = flow
        self.name = name
        self.parallelism = parallelism
        self.partition = partition
        self.key = key

    def _as(self, partition: str, key: str = "") -> Stream:
        return Stream(self.flow, self.name, self.parallelism, partition, key)

    def key_by(self, field: str) -> Stream:
        """Each value of ``field`` goes to exactly one instance of the next task."""
        return self._as("hash", field)

    def broadcast(self) -> Stream:
        return self._as("broadcast")

    def rebalance(self) -> Stream:
        return self._as("rebalance")

    def custom(self) -> Stream:
        """The upstream operator's ``route()`` splits each batch among the next instances."""
        return self._as("custom")

    def forward(self) -> Stream:
        return self._as("forward")

    def edge(self) -> dict[str, Any]:
        edge: dict[str, Any] = {"from": self.name, "partition": self.partition}
        if self.key:
            edge["key"] = self.key
        return edge

    def apply(
        self, name: str, op: type | str, *, parallelism: int | None = None, **params: Any
    ) -> Stream:
        """Task ``name`` running ``op`` on this stream; its output."""
        return self.flow.apply(name, op, self, parallelism=parallelism, **params)

    def map(
        self, name: str, fn: str, *, dtype: Any = None, parallelism: int | None = None
    ) -> Stream:
        params: dict[str, Any] = {"fn": fn}
        if dtype is not None:
            params["dtype"] = dtype
        return self.apply(name, "zdf.dataflow.builtin:Map", parallelism=parallelism, **params)

    def filter(self, name: str, fn: str, *, parallelism: int | None = None) -> Stream:
        return self.apply(name, "zdf.dataflow.builtin:Filter", parallelism=parallelism, fn=fn)

    def sink(
        self,
        name: str,
        op: type | str = DEFAULT_SINK,
        *,
        parallelism: int | None = None,
        **params: Any,
    ) -> Stream:
        return self.apply(name, op, parallelism=parallelism, **params)


class Flow:
    def __init__(self, flow_id: str, *, checkpoint_interval: str = "1s", window: int = 8) -> None:
        self.flow_id = flow_id
        self.checkpoint_interval = checkpoint_interval
        self.window = window
        self.tasks: list[dict[str, Any]] = []

    def source(self, name: str, op: type | str, *, parallelism: int = 1, **params: Any) -> Stream:
        self.tasks.append(
            {
                "name": name,
                "operator": operator_path(op),
                "parallelism": parallelism,
                "params": params,
            }
        )
        return Stream(self, name, parallelism)

    def apply(
        self,
        name: str,
        op: type | str,
        *inputs: Stream,
        parallelism: int | None = None,
        **params: Any,
    ) -> Stream:
        """Task ``name`` running ``op`` over ``inputs`` (several for a join or a union)."""
        if parallelism is None:
            parallelism = inputs[0].parallelism if inputs else 1
        self.tasks.append(
            {
                "name": name,
                "operator": operator_path(op),
                "parallelism": parallelism,
                "params": params,
                "inputs": [stream.edge() for stream in inputs],
            }
        )
        return Stream(self, name, parallelism)

    def to_dict(self) -> dict[str, Any]:
        """The job file's table (``zdf.dataflow.graph``)."""
        return {
            "job-type": "dataflow",
            "flow-id": self.flow_id,
            "checkpoint-interval": self.checkpoint_interval,
            "window": self.window,
            "task": [dict(task) for task in self.tasks],
        }

    def to_job(self) -> JobSpec:
        """Validated and expanded; ``ConfigError`` (one line) when the graph is wrong."""
        from zdf.dataflow.graph import build_dataflow_job

        return build_dataflow_job(self.to_dict(), f"flow {self.flow_id!r}")
