"""Tasks sent ahead of their inputs (zdf.master.fndeps, pipelining) on a real cluster:
a chain, a failure in it, a cancel, and a kill -9 of the executor the chain waits on."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import psutil
import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def functions(cluster: LocalCluster) -> dict[str, Any]:
    return cluster.client().call("cluster_status")["functions"]  # type: ignore[no-any-return]


def test_a_chain_is_sent_ahead_to_its_worker(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = str(tmp_path / "go")
    with zdf.connect(cluster.master_addr) as client:
        head = client.submit(examples.wait_for, marker, 30)  # holds the chain back
        future = client.submit(examples.add, head, 0)
        for _ in range(99):
            future = client.submit(examples.add, future, 1)
        # Every link waits on the head's worker before the head is done.
        wait_until(lambda: functions(cluster)["pipelined"] >= 60, 20, "the chain sent ahead")
        Path(marker).touch()
        assert future.result(30) == 1 + 99  # True + 0 + 99


def test_a_failure_in_a_chain_sent_ahead_reaches_every_later_link(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = str(tmp_path / "go")
    with zdf.connect(cluster.master_addr) as client:
        head = client.submit(examples.wait_for, marker, 30)
        bad = client.submit(examples.add, head, "x")  # True + "x": a TypeError
        later = [client.submit(examples.add, bad, 1)]
        for _ in range(20):
            later.append(client.submit(examples.add, later[-1], 1))
        wait_until(lambda: functions(cluster)["pipelined"] >= 20, 20, "the chain sent ahead")
        Path(marker).touch()
        for future in (bad, *later):
            with pytest.raises(TypeError) as info:
                future.result(30)
            assert "examples.py" in info.value.remote_traceback  # type: ignore[attr-defined]
        assert client.submit(examples.add, 1, 1).result(10) == 2  # the workers go on


def test_a_task_sent_ahead_is_canceled_before_its_input_is_made(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = str(tmp_path / "go")
    with zdf.connect(cluster.master_addr) as client:
        head = client.submit(examples.wait_for, marker, 30)
        canceled = client.submit(examples.add, head, 1)
        kept = client.submit(examples.add, head, 2)
        wait_until(lambda: functions(cluster)["pipelined"] >= 2, 20, "both sent ahead")
        # Its worker may be the head's, busy: it answers once the head ends (in a thread).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(canceled.cancel)
            wait_until(lambda: functions(cluster)["canceling"] == 1, 20, "the worker asked")
            Path(marker).touch()
            assert answer.result(30) is True
        assert kept.result(30) == 3
        assert canceled.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            canceled.result(1)


def test_a_chain_waiting_on_a_killed_executor_is_made_again(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = str(tmp_path / "pid")
    with zdf.connect(cluster.master_addr) as client:
        head = client.options(retries=1).submit(examples.hold_once, marker, 60)
        future = client.submit(examples.add, head, "-")
        for i in range(30):
            future = client.submit(examples.add, future, str(i % 10))
        wait_until(lambda: Path(marker).exists() and Path(marker).read_text(), 20, "the head")
        wait_until(lambda: functions(cluster)["pipelined"] >= 30, 20, "the chain sent ahead")
        worker = int(Path(marker).read_text())
        victim = next(c for c in cluster.executors if c.pid == psutil.Process(worker).ppid())
        cluster.kill(victim)
        expected = "retried-" + "".join(str(i % 10) for i in range(30))
        assert future.result(60) == expected
