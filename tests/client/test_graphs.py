"""Task graphs through the whole path: futures as arguments, results kept on the workers,
worker-to-worker transfer, release, gather/scatter/wait."""

from __future__ import annotations

import concurrent.futures
import gc
import time
from typing import Any

import numpy as np
import pytest

import zdf
from zdf.errors import RemoteError
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)


def test_futures_as_arguments_at_any_depth(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        a = client.submit(examples.add, 1, 2)
        b = client.submit(examples.mul, a, 10)
        assert b.result(10) == 30
        nested = client.submit(sum, [a, b, {"x": a}["x"]])
        assert nested.result(10) == 36
        array = client.submit(examples.ones, 4)
        in_dict = client.submit(examples.length, {"x": array, "y": (a, [b])})
        assert in_dict.result(10) == 2
        kw = client.submit(examples.add, a, b=b)
        assert kw.result(10) == 33
        both = client.submit(examples.add, [a, b], [b, {"k": a}])
        assert both.result(10) == [3, 30, 30, {"k": 3}]


def test_a_chain_waits_for_each_input(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        future = client.submit(examples.add, 0, 1)
        for _ in range(99):
            future = client.submit(examples.add, future, 1)
        assert future.result(30) == 100


def test_a_failed_input_fails_its_dependents_with_its_error(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        for view in (client.options(retries=0), client.options(priority=1)):
            bad = view.submit(examples.fail, "kaput")
            child = client.submit(examples.add, bad, 1)
            grandchild = client.submit(examples.add, 1, child)
            for future in (child, grandchild):
                with pytest.raises(RuntimeError, match="kaput") as info:
                    future.result(10)
                assert "examples.py" in info.value.remote_traceback  # type: ignore[attr-defined]
        custom = client.submit(examples.raise_custom, "odd")
        dependent = client.submit(examples.add, custom, 1)
        error = dependent.exception(10)
        assert isinstance(error, RemoteError) and error.remote_type.endswith("CustomError")


def test_a_lone_tasks_future_as_an_input(cluster: LocalCluster) -> None:
    """A task run under a lease (past the master) is still an input the master finds."""
    with zdf.connect(cluster.master_addr) as client:
        for _ in range(5):
            client.submit(examples.noop).result(10)
        wait_until(lambda: client.leased_worker is not None, 10, "a lease")
        lone = client.submit(examples.add, 20, 1)
        assert lone.result(10) == 21 and lone.lease is not None
        assert client.submit(examples.mul, lone, 2).result(10) == 42
        failed = client.submit(examples.fail, "under a lease")
        assert failed.exception(10) is not None
        with pytest.raises(RuntimeError, match="under a lease"):
            client.submit(examples.add, failed, 1).result(10)


def test_inputs_travel_worker_to_worker(cluster: LocalCluster) -> None:
    """Arrays made on two different workers meet in one task; the client never sends them."""
    with zdf.connect(cluster.master_addr) as client:
        pids: set[int] = set()
        pieces = []
        deadline = time.monotonic() + 20
        while len(pieces) < 2 and time.monotonic() < deadline:
            burst = [client.submit(examples.ones, 100_000) for _ in range(8)]
            where = [client.submit(examples.pid_of, f) for f in burst]
            for f, w in zip(burst, where, strict=True):
                if w.result(10) not in pids:
                    pids.add(w.result(10))
                    pieces.append(f)
        assert len(pieces) >= 2, "the bursts ran on one worker only"
        total = client.submit(examples.add, pieces[0], pieces[1])
        np.testing.assert_array_equal(total.result(10), np.full(100_000, 2.0))


def test_a_task_goes_where_its_input_is(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        big = [client.submit(examples.ones, 1_000_000) for _ in range(4)]
        made_on = [client.submit(examples.pid_of, b).result(10) for b in big]
        # Each follower ran where its 8 MB input was (placed there, nothing fetched).
        again = [client.submit(examples.pid_of, b).result(10) for b in big]
        assert again == made_on


def test_scatter_gather_and_wait(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        array = np.arange(1000.0)
        one = client.scatter(array)
        assert one.done()
        assert client.submit(examples.total, one).result(10)["sum"] == float(array.sum())
        many = client.scatter([1, 2, 3])
        assert client.gather(client.submit(sum, many)) == 6
        named = client.scatter({"x": 5, "y": 7})
        assert client.submit(examples.mul, named["x"], named["y"]).result(10) == 35
        everywhere = client.scatter(np.ones(10), broadcast=True)
        outs = [client.submit(examples.total, everywhere) for _ in range(8)]
        assert client.gather(outs)[0]["sum"] == 10.0
        nested = client.gather({"a": [one, (many[0], {"z": named["y"]})], "b": 3})
        assert nested["a"][1] == (1, {"z": 7}) and nested["b"] == 3
        np.testing.assert_array_equal(nested["a"][0], array)

        slow = client.submit(examples.hold, 2)
        fast = client.submit(examples.square, 3)
        done, not_done = zdf.wait([slow, fast], timeout=10, return_when=zdf.FIRST_COMPLETED)
        assert fast in done and slow in not_done
        bad = client.options(retries=0).submit(examples.fail)
        done, not_done = zdf.wait([slow, bad], timeout=10, return_when=zdf.FIRST_EXCEPTION)
        assert bad in done
        done, not_done = zdf.wait([slow, fast, bad], timeout=10)
        assert not not_done
        pending = client.submit(examples.hold, 5)
        done, not_done = zdf.wait([pending], timeout=0.2)
        assert pending in not_done and not done
        with pytest.raises(ValueError, match="return_when"):
            zdf.wait([fast], return_when="SOMETIMES")


def test_values_that_cannot_travel_are_clear_errors(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        with pytest.raises(TypeError, match=r"cannot send a value of type object.*add"):
            client.submit(examples.add, object(), 1)
        with pytest.raises(TypeError, match="cannot scatter"):
            client.scatter(object())
        gone = client.submit(examples.square, 2)
        gone.result(10)
        gone.release()
        assert gone.result() == 4  # still readable here
        with pytest.raises(ValueError, match="released"):
            client.submit(examples.add, gone, 1)
        with zdf.connect(cluster.master_addr) as other:
            theirs = other.submit(examples.square, 2)
            with pytest.raises(ValueError, match="another client"):
                client.submit(examples.add, theirs, 1)


def _stores(client: Any, n: int = 32) -> dict[int, dict[str, int]]:
    """What every worker's object store holds (sampled by a burst of tasks)."""
    infos = [client.submit(examples.store_info) for _ in range(n)]
    out = {}
    for future in infos:
        info = future.result(10)
        out[info["pid"]] = info
    return out


def test_released_results_leave_the_workers(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        held = [client.submit(examples.kib, 256) for _ in range(200)]
        concurrent.futures.wait(held, timeout=30)
        # Bytes held: the 200 results of 256 KiB (the probes' own results are small).
        assert sum(i["bytes"] for i in _stores(client).values()) >= 200 * 256 * 1024
        kept = held[0]
        # A result a pending task takes is kept until that task ran.
        slow = client.submit(examples.hold, 1.0)
        user = client.submit(examples.add, slow, 0.0)
        taken = client.submit(examples.kib, 1024)
        waits = client.submit(examples.length, taken, user)
        del held[1:]
        taken.release()
        del taken
        gc.collect()

        def small() -> bool:
            return sum(i["bytes"] for i in _stores(client).values()) < 2 * 1024 * 1024 + 10**6

        wait_until(small, 10, "released results to be dropped on the workers")
        assert waits.result(10) == 1024 * 1024
        assert len(kept.result(10)) == 256 * 1024
