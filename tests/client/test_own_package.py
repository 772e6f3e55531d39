"""The README's function example with a package of your own (examples/mypackage) put on
the executors by PYTHONPATH, as the README's recipe says."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import zdf
from zdf.localcluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cluster_with_examples(tmp_path: Path) -> Iterator[LocalCluster]:
    path = os.pathsep.join(p for p in (str(EXAMPLES), os.environ.get("PYTHONPATH", "")) if p)
    local = LocalCluster(
        str(tmp_path / "c"), executors=1, workers=1, extra_env={"PYTHONPATH": path}
    )
    try:
        yield local.start()
    finally:
        local.stop()


def test_the_readme_example_runs(
    cluster_with_examples: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the client imports it too
    from mypackage.work import score

    with zdf.connect(cluster_with_examples.master_addr) as client:
        assert client.submit(score, 42, weight=0.5).result(timeout=10) == 882.0
        assert list(client.map(score, range(100), chunksize=16)) == [x * x for x in range(100)]
        futures = [client.submit(score, i) for i in range(10)]
        assert sorted(f.result() for f in zdf.as_completed(futures, timeout=30)) == [
            float(i * i) for i in range(10)
        ]

        async def main() -> list[float]:
            return list(await asyncio.gather(*(client.submit(score, i) for i in range(5))))

        assert asyncio.run(main()) == [0.0, 1.0, 4.0, 9.0, 16.0]
