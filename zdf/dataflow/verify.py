"""``zdf verify-flow``: check a dataflow job's output files against what they must hold.

For every ``FileSink`` task of the job file it checks that each instance's
``.npy`` is complete (sealed: its header counts every row in it). When the sink
writes a ``KeyedSum``'s results it also checks that every key appears exactly
once across the instances, in the instance its hash sends it to, and, where
the sums have a closed form, that they are exact:

* ``Sequence`` -(hash on key)-> ``KeyedSum`` (field value): per key k, the sum
  and count of the values of ``[start, stop)`` congruent to k modulo ``keys``;
* ``Sequence`` -> ``Map(zdf.dataflow.examples:to_words)`` -(hash on word)->
  ``KeyedSum`` (field count): the word count of ``word_counts``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zdf.dataflow.partition import hash_channels
from zdf.jobs.spec import JobSpec, TaskSpec

SEQUENCE = "zdf.dataflow.builtin:Sequence"
KEYED_SUM = "zdf.dataflow.builtin:KeyedSum"
FILE_SINK = "zdf.dataflow.builtin:FileSink"
MAP = "zdf.dataflow.builtin:Map"
TO_WORDS = "zdf.dataflow.examples:to_words"


@dataclass
class FlowReport:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checked)


def sequence_sums(start: int, stop: int, keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Per key 0..keys-1: sum and count of the values v in [start, stop) with v % keys == key."""
    k = np.arange(keys, dtype=np.int64)
    first = start + (k - start) % keys
    count = np.maximum(0, -(-(stop - first) // keys))
    total = count * first + keys * count * (count - 1) // 2
    return total, count


def read_sink(out_dir: str, name: str, parallelism: int) -> list[np.ndarray | str]:
    """Each instance's rows, or why they cannot be trusted (missing, not sealed)."""
    out: list[np.ndarray | str] = []
    for i in range(parallelism):
        path = os.path.join(out_dir, f"{name}-{i}.npy")
        try:
            with open(path, "rb") as fh:
                np.lib.format.read_magic(fh)
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                start = fh.tell()
            size = os.path.getsize(path)
            if size != start + shape[0] * dtype.itemsize:
                out.append(f"{path}: {shape[0]} rows in its header, {size - start} bytes of rows")
                continue
            out.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            out.append(f"{path}: {exc}")
    return out


def _upstream(task: TaskSpec) -> tuple[str, dict[str, Any]] | None:
    inputs = task.params["flow"]["inputs"]
    return (inputs[0]["task"].rsplit("-", 1)[0], inputs[0]) if inputs else None


def verify_flow(spec: JobSpec) -> FlowReport:
    report = FlowReport()
    kinds = {t.kind: t for t in spec.tasks}
    flow_id = str(spec.settings.get("flow-id", spec.name))
    for name, task in kinds.items():
        if task.operator != FILE_SINK:
            continue
        flow = task.params["flow"]
        out_dir = os.path.join(str(flow["params"].get("dir", "/tmp/dataflow")), flow_id)
        parts = read_sink(out_dir, name, int(flow["parallelism"]))
        bad = [p for p in parts if isinstance(p, str)]
        report.problems += bad
        report.checked.append(name)
        if bad:
            continue
        files = [p for p in parts if not isinstance(p, str)]
        report.rows += sum(len(f) for f in files)
        up = _upstream(task)
        if up is None or kinds[up[0]].operator != KEYED_SUM:
            continue
        summer = kinds[up[0]]
        report.problems += _check_keys(name, files, summer, up[1]["port"], spec)
        report.problems += _closed_form(name, files, summer, kinds)
    if not report.checked:
        report.problems.append("the job has no FileSink to check")
    return report


def _check_keys(
    name: str, files: list[np.ndarray], summer: TaskSpec, port: str, spec: JobSpec
) -> list[str]:
    problems = []
    keys = np.concatenate([f["key"] for f in files])
    _, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        problems.append(f"{name}: {int((counts > 1).sum())} keys appear more than once")
    flow = summer.params["flow"]
    hashed = [i for i in flow["inputs"] if i["index"] == 0]
    partition = None
    for task in spec.tasks:
        for out in task.params["flow"].get("outputs", []):
            if task.task_id == hashed[0]["task"] and out["port"].startswith(f"to-{summer.kind}."):
                partition = out
    if partition is not None and partition["partition"] == "hash":
        n = int(flow["parallelism"])
        for i, rows in enumerate(files):
            wrong = int(np.count_nonzero(hash_channels(rows["key"], n) != i))
            if wrong:
                problems.append(f"{name}-{i}: {wrong} keys of another instance's share")
    return problems


def _closed_form(
    name: str, files: list[np.ndarray], summer: TaskSpec, kinds: dict[str, TaskSpec]
) -> list[str]:
    rows = np.concatenate(files)
    rows = rows[np.argsort(rows["key"], kind="stable")]
    up = _upstream(summer)
    if up is None:
        return []
    source = kinds[up[0]]
    words = source.operator == MAP and source.params["flow"]["params"].get("fn") == TO_WORDS
    if words:
        origin = _upstream(source)
        source = kinds[origin[0]] if origin else source
    if source.operator != SEQUENCE:
        return []
    p = source.params["flow"]["params"]
    start, stop = int(p.get("start", 0)), int(p["stop"])
    if words:
        from zdf.dataflow.examples import word_counts

        expected = word_counts(start, stop)
        got = {bytes(k): int(s) for k, s in zip(rows["key"], rows["sum"], strict=True)}
        want = {k: v for k, v in expected.items() if v}
        return [] if got == want else [f"{name}: word counts {got} differ from {want}"]
    field = summer.params["flow"]["params"].get("field", "value")
    if field != "value":
        return []
    total, count = sequence_sums(start, stop, int(p.get("keys", 1)))
    present = np.flatnonzero(count)
    if len(rows) != len(present) or (rows["key"] != present).any():
        return [f"{name}: {len(rows)} keys, expected {len(present)}"]
    wrong = int(
        np.count_nonzero((rows["sum"] != total[present]) | (rows["count"] != count[present]))
    )
    return [f"{name}: {wrong} keys with a wrong sum or count"] if wrong else []
