"""Results kept on a worker beyond its executor's ``memory-limit`` spill to files in
its spill dir, read back exactly, and their files go when they are released."""

from __future__ import annotations

import gc
import stat
from pathlib import Path

import numpy as np
import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
COUNT = 12  # results of 1 MiB against a limit of 8 MiB (spilling above 60 %: 4.8 MiB)


def _spilled(cluster: LocalCluster) -> list[Path]:
    """The spilled files of the executor's workers (``<data-dir>/<id>/spill/<worker>``)."""
    return sorted(Path(cluster.base_dir, "executor-1").glob("*/spill/*/*"))


@pytest.mark.cluster(executors=1, workers=1, extra_env={"ZDF_MEMORY_LIMIT": "8MiB"})
def test_results_beyond_the_memory_limit_spill_and_come_back(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        held = [client.submit(examples.block, i * MiB) for i in range(COUNT)]
        expected = [examples.block(i * MiB) for i in range(COUNT)]
        results = client.gather(held, timeout=30)
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        files = _spilled(cluster)
        # Above 4.8 MiB in memory the least recently used go to disk: most of the 12 MiB.
        assert len(files) >= COUNT - 5, files
        assert sum(f.stat().st_size for f in files) >= (COUNT - 5) * MiB
        spill_dir = files[0].parent
        assert stat.S_IMODE(spill_dir.stat().st_mode) == 0o700
        # Tasks on the worker take the spilled values as they were (read from their files).
        sums = client.gather([client.submit(examples.total, f) for f in held], timeout=30)
        assert [s["sum"] for s in sums] == [float(w.sum()) for w in expected]
        np.testing.assert_array_equal(sums[0]["doubled"], expected[0] * 2)
        del sums, results
        for future in held:
            future.release()
        del held
        gc.collect()
        wait_until(lambda: not _spilled(cluster), 15, "released results' files to be removed")
    cluster.stop()  # a clean exit removes the worker's spill dir
    assert not spill_dir.exists() and not spill_dir.parent.exists()
