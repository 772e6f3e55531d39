"""The keyed-sums job file the dataflow tests submit and verify."""

from __future__ import annotations

from pathlib import Path

SUMS_JOB = """
job-type = "dataflow"
flow-id = "sums"
[[task]]
name = "numbers"
operator = "zdf.dataflow.builtin:Sequence"
parallelism = 2
params = {{ stop = {stop}, keys = {keys} }}
[[task]]
name = "sum"
operator = "zdf.dataflow.builtin:KeyedSum"
parallelism = 3
inputs = [{{ from = "numbers", partition = "hash", key = "key" }}]
[[task]]
name = "out"
operator = "zdf.dataflow.builtin:FileSink"
parallelism = 3
inputs = [{{ from = "sum" }}]
params = {{ dir = "{dir}" }}
"""


def sums_job_file(out: Path, stop: int, keys: int) -> str:
    """Sequence(2) -> hash(key) -> KeyedSum(3) -> FileSink(3) into ``out``."""
    return SUMS_JOB.format(dir=out, stop=stop, keys=keys)
