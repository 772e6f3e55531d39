"""The README's dataflow examples, as written: the Python flow and the user operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zdf.dataflow import Flow, Transform
from zdf.dataflow.builtin import KeyedSum, Sequence
from zdf.runtime.local import LocalRunner

pytestmark = pytest.mark.timeout(60)


class Doubler(Transform):  # README "Operators of your own"
    stateless = True

    @classmethod
    def output_dtype(cls, params: dict[str, Any], inputs: list[np.dtype[Any]]) -> np.dtype[Any]:
        return inputs[0]

    def process(self, rows: np.ndarray, port: int) -> np.ndarray:
        out = rows.copy()
        out["value"] *= 2
        return out


def test_a_user_operator_in_a_flow(tmp_path: Path) -> None:
    flow = Flow("doubled")
    (
        flow.source("numbers", Sequence, parallelism=2, stop=10_000, keys=10)
        .apply("double", f"{__name__}:Doubler")
        .key_by("key")
        .apply("sum", KeyedSum, parallelism=3, field="value")
        .sink("out", dir=str(tmp_path))
    )
    with LocalRunner(flow.to_job()) as runner:
        runner.run(timeout=30)
    rows = np.concatenate([np.load(tmp_path / "doubled" / f"out-{i}.npy") for i in range(3)])
    values = np.arange(10_000)
    want = 2 * np.bincount(values % 10, weights=values).astype(np.int64)
    got = sorted(zip(rows["key"].tolist(), rows["sum"].tolist(), strict=True))
    assert got == list(enumerate(want.tolist()))
