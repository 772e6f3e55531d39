"""``job-type = "dataflow"``: a graph of operators, validated, expanded into a ``JobSpec``.

The job file (see DESIGN.md, "Dataflow jobs of your own")::

    job-type = "dataflow"
    flow-id = "sums"
    [[task]]
    name = "numbers"
    operator = "zdf.dataflow.builtin:Sequence"
    parallelism = 2
    params = { start = 0, stop = 1000000, keys = 1000 }
    [[task]]
    name = "sum"
    operator = "zdf.dataflow.builtin:KeyedSum"
    parallelism = 3
    inputs = [{ from = "numbers", partition = "hash", key = "key" }]

``zdf.dataflow.Flow`` builds the same table in Python, so both paths go through
``build_dataflow_job``. Validation is complete before anything is submitted and
every error is one line naming the file, the task and the fault: bad names (no
path separators, not "." or ".."), unknown tasks and operators, cycles, forward
edges between different parallelisms, hash keys missing from the upstream
dtype, and inputs an operator does not accept (its ``output_dtype`` says why).

Expansion: task ``name`` with parallelism P becomes tasks ``name-0`` ..
``name-(P-1)``; an edge into ``name`` becomes one output port ``to-<name>.<k>`` on
each upstream instance (k: the input's index), with one channel per downstream
instance (one for ``forward``). Tasks joined by ``forward`` edges share a
placement group per instance, so their batches stay inside one worker process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zdf.config import parse_duration
from zdf.dataflow.dtypes import dtype_to_wire, require_fields
from zdf.dataflow.partition import PARTITIONS
from zdf.errors import ConfigError, JobError
from zdf.jobs.spec import JobSpec, TaskSpec

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PARALLELISM = 1000
"""Instances of one task at most: the benchmark job's table-num (one producer a table)."""
TASK_KEYS = {"name", "operator", "parallelism", "params", "inputs"}
INPUT_KEYS = {"from", "partition", "key"}
JOB_KEYS = {"job-type", "flow-id", "name", "checkpoint-interval", "window", "task"}


def check_name(value: Any, what: str) -> str:
    """A name used in task ids and file names: no path separators, not "." or ".."."""
    if not isinstance(value, str) or not NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{what} must be 1-64 letters, digits, '.', '_' or '-' (not '.' or '..'), got {value!r}"
        )
    return value


@dataclass
class Edge:
    source: str
    partition: str
    key: str


@dataclass
class Node:
    name: str
    operator: str
    parallelism: int
    params: dict[str, Any]
    inputs: list[Edge] = field(default_factory=list)
    dtype: np.dtype[Any] | None = None


def _node(raw: Any, i: int) -> Node:
    if not isinstance(raw, dict):
        raise ValueError(f"[[task]] #{i + 1} must be a table")
    name = check_name(raw.get("name"), f"[[task]] #{i + 1}: 'name'")
    where = f"task {name!r}"
    unknown = set(raw) - TASK_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {sorted(TASK_KEYS)})"
        )
    operator = raw.get("operator")
    if not isinstance(operator, str) or ":" not in operator:
        raise ValueError(f"{where}: 'operator' must be an import path module:Class")
    par = raw.get("parallelism", 1)
    if isinstance(par, bool) or not isinstance(par, int) or not 1 <= par <= MAX_PARALLELISM:
        raise ValueError(f"{where}: 'parallelism' must be an integer from 1 to {MAX_PARALLELISM}")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{where}: 'params' must be a table")
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list):
        raise ValueError(f"{where}: 'inputs' must be a list of tables")
    edges = []
    for edge in inputs:
        if not isinstance(edge, dict) or "from" not in edge:
            raise ValueError(f"{where}: each input must be a table with 'from'")
        unknown = set(edge) - INPUT_KEYS
        if unknown:
            raise ValueError(
                f"{where}: input key {sorted(unknown)[0]!r} is not one of {sorted(INPUT_KEYS)}"
            )
        partition = edge.get("partition", "forward")
        if partition not in PARTITIONS:
            raise ValueError(
                f"{where}: partition must be one of {', '.join(PARTITIONS)}, got {partition!r}"
            )
        key = edge.get("key", "")
        if partition == "hash" and not (isinstance(key, str) and key):
            raise ValueError(f"{where}: a hash input needs 'key' (the field to partition on)")
        edges.append(Edge(str(edge["from"]), str(partition), str(key or "")))
    return Node(name, operator, par, dict(params), edges)


def _order(nodes: dict[str, Node]) -> list[Node]:
    """Upstream before downstream; ``ValueError`` naming the tasks of a cycle."""
    indegree = {name: 0 for name in nodes}
    for node in nodes.values():
        for edge in node.inputs:
            if edge.source not in nodes:
                raise ValueError(f"task {node.name!r}: input from unknown task {edge.source!r}")
            indegree[node.name] += 1
    ready = [name for name, deg in indegree.items() if deg == 0]
    order: list[Node] = []
    while ready:
        name = ready.pop(0)
        order.append(nodes[name])
        for other in nodes.values():
            for edge in other.inputs:
                if edge.source == name:
                    indegree[other.name] -= 1
                    if indegree[other.name] == 0:
                        ready.append(other.name)
    if len(order) != len(nodes):
        stuck = sorted(name for name, deg in indegree.items() if deg > 0)
        raise ValueError(f"the graph has a cycle through tasks {', '.join(stuck)}")
    return order


def _typecheck(node: Node, nodes: dict[str, Node]) -> None:
    from zdf.dataflow.operator import FlowOperator
    from zdf.runtime.launch import load_operator

    where = f"task {node.name!r}"
    try:
        cls = load_operator(node.operator)
    except JobError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not issubclass(cls, FlowOperator):
        raise ValueError(
            f"{where}: {node.operator} is not a zdf.dataflow operator (Source or Transform)"
        )
    dtypes = []
    for edge in node.inputs:
        upstream = nodes[edge.source]
        if upstream.dtype is None:
            raise ValueError(f"{where}: input from {edge.source!r}, which has no output (a sink)")
        if edge.partition == "forward" and upstream.parallelism != node.parallelism:
            raise ValueError(
                f"{where}: a forward input needs the same parallelism as {edge.source!r}"
                f" ({upstream.parallelism}), not {node.parallelism}; use hash or rebalance"
            )
        if edge.partition == "custom":
            sender = load_operator(upstream.operator)
            if getattr(sender, "route", FlowOperator.route) is FlowOperator.route:
                raise ValueError(
                    f"{where}: a custom input needs {edge.source!r}'s operator to define route()"
                )
        if edge.partition == "hash":
            require_fields(
                upstream.dtype, edge.key, what=f"{where}: hash key: {edge.source!r}'s output"
            )
        dtypes.append(upstream.dtype)
    keys = {edge.key for edge in node.inputs if edge.partition == "hash"}
    if cls.keyed and "key" not in node.params and len(keys) == 1:
        node.params["key"] = next(iter(keys))
    try:
        node.dtype = cls.output_dtype(node.params, dtypes)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: {node.operator}: {exc}") from None


def _groups(order: list[Node]) -> dict[str, str]:
    """Tasks joined by forward edges share a root (their placement group's name)."""
    root = {node.name: node.name for node in order}

    def find(name: str) -> str:
        while root[name] != name:
            name = root[name]
        return name

    for node in order:
        for edge in node.inputs:
            if edge.partition == "forward":
                root[find(node.name)] = find(edge.source)
    members: dict[str, int] = {}
    for node in order:
        members[find(node.name)] = members.get(find(node.name), 0) + 1
    return {node.name: find(node.name) if members[find(node.name)] > 1 else "" for node in order}


def build_dataflow_job(data: dict[str, Any], source: str) -> JobSpec:
    """Validate a dataflow job table and expand it (see the module docstring)."""
    try:
        return _build(data)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _build(data: dict[str, Any]) -> JobSpec:
    unknown = set(data) - JOB_KEYS
    if unknown:
        raise ValueError(
            f"unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(JOB_KEYS))})"
        )
    flow_id = check_name(data.get("flow-id", data.get("name")), "'flow-id'")
    interval = parse_duration(data.get("checkpoint-interval", "1s"))
    window = data.get("window", 8)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 1024:
        raise ValueError(
            "'window' must be an integer from 1 to 1024 (batches in flight per channel)"
        )
    raw = data.get("task")
    if not isinstance(raw, list) or not raw:
        raise ValueError("a dataflow job needs at least one [[task]]")
    nodes: dict[str, Node] = {}
    for i, item in enumerate(raw):
        node = _node(item, i)
        if node.name in nodes:
            raise ValueError(f"task {node.name!r} is named twice")
        nodes[node.name] = node
    order = _order(nodes)
    if not order[0].inputs and not any(not n.inputs for n in order):
        raise ValueError("a dataflow job needs a source (a task without inputs)")
    for node in order:
        _typecheck(node, nodes)
    groups = _groups(order)
    consumers: dict[str, list[tuple[Node, int]]] = {name: [] for name in nodes}
    for node in order:
        for k, edge in enumerate(node.inputs):
            consumers[edge.source].append((node, k))
    tasks = []
    for node in order:
        for i in range(node.parallelism):
            tasks.append(_task(node, i, nodes, consumers[node.name], groups, flow_id, window))
    settings = {"flow-id": flow_id, "checkpoint-interval": interval, "window": window}
    return JobSpec(flow_id, "dataflow", tasks, settings)


def port_name(consumer: str, k: int) -> str:
    return f"to-{consumer}.{k}"


def _task(
    node: Node,
    i: int,
    nodes: dict[str, Node],
    consumers: list[tuple[Node, int]],
    groups: dict[str, str],
    flow_id: str,
    window: int,
) -> TaskSpec:
    inputs = []
    for k, edge in enumerate(node.inputs):
        upstream = nodes[edge.source]
        assert upstream.dtype is not None
        wire = dtype_to_wire(upstream.dtype)
        port = port_name(node.name, k)
        if edge.partition == "forward":
            senders = [(f"{edge.source}-{i}", 0)]
        else:
            senders = [(f"{edge.source}-{u}", i) for u in range(upstream.parallelism)]
        inputs += [
            {"task": t, "port": port, "channel": ch, "index": k, "dtype": wire} for t, ch in senders
        ]
    outputs = []
    done_after: list[str] = []
    for consumer, k in consumers:
        edge = consumer.inputs[k]
        forward = edge.partition == "forward"
        outputs.append(
            {
                "port": port_name(consumer.name, k),
                "channels": 1 if forward else consumer.parallelism,
                "partition": edge.partition,
                "key": edge.key,
            }
        )
        targets = [i] if forward else range(consumer.parallelism)
        done_after += [
            f"{consumer.name}-{j}" for j in targets if f"{consumer.name}-{j}" not in done_after
        ]
    flow = {
        "flow-id": flow_id,
        "name": node.name,
        "instance": i,
        "parallelism": node.parallelism,
        "params": node.params,
        "dtype": None if node.dtype is None else dtype_to_wire(node.dtype),
        "inputs": inputs,
        "outputs": outputs,
        "window": window,
    }
    params: dict[str, Any] = {"flow": flow}
    if done_after:
        params["done-after"] = done_after
    group = f"{groups[node.name]}-{i}" if groups[node.name] else ""
    return TaskSpec(f"{node.name}-{i}", node.name, node.operator, params, group)
