"""A value made on one executor and taken by a task on another, on the same host: it
crosses through shared memory (asserted by the reader's counters), exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import zdf
from zdf.errors import ZdfError
from zdf.executor import shmhandoff
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shmhandoff.host_identity(), reason="no usable /dev/shm here"),
]


def two_labelled_executors(base_dir: str) -> LocalCluster:
    """Executors ``left`` and ``right`` (one worker each): tasks pinned by resources."""
    local = LocalCluster(base_dir, executors=0, workers=1, log_level="warning")
    local.start()
    for label in ("left", "right"):
        local.resources = {label: 1}
        local.start_executor()
    local.wait_ready()
    with zdf.connect(local.master_addr) as client:
        for label in ("left", "right"):  # the master knows each one's resources
            wait_until(lambda label=label: runs_on(client, label), 30, f"executor {label}")
    return local


def runs_on(client: zdf.Client, label: str) -> bool:
    try:
        client.options(resources={label: 1}).submit(examples.noop).result(30)
    except ZdfError:  # infeasible until the master has the executor's resources
        return False
    return True


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = two_labelled_executors(str(tmp_path_factory.mktemp("shm")))
    try:
        yield local
    finally:
        local.stop()


def test_a_big_input_from_the_other_executor_comes_through_shared_memory(
    pair: LocalCluster,
) -> None:
    with zdf.connect(pair.master_addr) as client:
        left, right = client.options(resources={"left": 1}), client.options(resources={"right": 1})
        made = left.submit(examples.block, 5, 24 << 20)
        total = right.submit(examples.total, made)
        expected = examples.block(5, 24 << 20).sum()
        assert total.result(60)["sum"] == expected
        counts = right.submit(examples.fetch_counts).result(30)
        assert counts["pid"] != left.submit(examples.pid_of).result(30)
        assert counts["shm_fetched"] >= 1 and counts["fallbacks"] == 0
        # A small input takes the socket, as before.
        small = left.submit(examples.kib, 4)
        assert right.submit(examples.length, small).result(30) == 4096
        after = right.submit(examples.fetch_counts).result(30)
        assert after["fetched"] == counts["fetched"] + 1
        assert after["shm_fetched"] == counts["shm_fetched"]
