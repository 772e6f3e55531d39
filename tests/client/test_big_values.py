"""Values over the wire's message limit: arguments and results in chunks on every
path (through the master, under a lease, back to the client), and a value over
``max-value-bytes`` refused at once with one line, never left to time out."""

from __future__ import annotations

import time

import numpy as np
import pytest

import zdf
from zdf.errors import LimitExceeded
from zdf.jobs import examples
from zdf.localcluster import LocalCluster
from zdf.wire.sockets import DEFAULT_MAX_MESSAGE_BYTES

pytestmark = pytest.mark.timeout(120)

BIG = 70_000_000  # bytes: over the 64 MiB a socket takes in one message


@pytest.mark.cluster(executors=1, workers=2)  # secured, as by default
def test_big_arguments_and_results_on_every_path(cluster: LocalCluster) -> None:
    assert BIG > DEFAULT_MAX_MESSAGE_BYTES
    blob = bytes(range(256)) * (BIG // 256)
    with zdf.connect(cluster.master_addr) as client:
        # The first lone task goes through the master (and asks for a lease) ...
        assert client.submit("builtins:len", blob).result(60) == len(blob)
        assert client.leased_worker is not None
        # ... the next ones straight to the leased worker.
        array = np.random.default_rng(0).random(BIG // 8 + 1000)
        back = client.submit("numpy:negative", array).result(60)
        np.testing.assert_array_equal(back, -array)
        # A big result of bytes, and big values in a batch of small tasks.
        assert client.submit("builtins:bytes", BIG).result(60) == bytes(BIG)
        # Several big results at once, from both workers, to one client socket.
        many = [client.submit("builtins:bytes", (10 << 20) + i) for i in range(8)]
        assert [len(f.result(60)) for f in many] == [(10 << 20) + i for i in range(8)]
        futures = [client.submit(examples.square, i) for i in range(20)]
        futures.insert(10, client.submit("builtins:len", blob))
        assert [f.result(60) for f in futures] == [i * i for i in range(10)] + [len(blob)] + [
            i * i for i in range(10, 20)
        ]


@pytest.mark.cluster(executors=1, workers=2, secure=False)
def test_small_tasks_are_not_held_up_by_a_big_transfer(cluster: LocalCluster) -> None:
    array = np.ones(48 << 20)  # 384 MiB: its chunks take a while on any machine
    with zdf.connect(cluster.master_addr) as client:
        client.submit(examples.square, 1).result(30)  # connected, workers known
        big = client.submit("numpy:sum", array)
        small = [client.submit(examples.square, i) for i in range(5)]
        assert [f.result(60) for f in small] == [i * i for i in range(5)]
        assert not big.done()  # the small ones came back while it was on its way
        assert big.result(60) == float(array.size)


@pytest.mark.cluster(
    executors=1, workers=1, secure=False, extra_env={"ZDF_MAX_VALUE_BYTES": "8MiB"}
)
def test_values_over_the_limit_fail_at_once_with_one_line(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert client.submit("builtins:len", b"x" * (7 << 20)).result(30) == 7 << 20
        started = time.monotonic()
        with pytest.raises(
            LimitExceeded, match=r"over the cluster's limit .*max-value-bytes"
        ) as info:
            client.submit("builtins:len", b"x" * (9 << 20))
        assert time.monotonic() - started < 1 and "\n" not in str(info.value)
        # A result over the limit fails its task with the same reason, at once.
        started = time.monotonic()
        with pytest.raises(ValueError, match=r"result of \d+ bytes is over .*max-value-bytes"):
            client.options(retries=0).submit("builtins:bytes", 9 << 20).result(30)
        assert time.monotonic() - started < 5
        assert client.submit(examples.square, 3).result(10) == 9  # the client still works


@pytest.mark.cluster(executors=2, workers=1)  # secured, as by default
def test_a_scattered_value_over_the_frame_limit_round_trips_exactly(
    cluster: LocalCluster,
) -> None:
    array = np.random.default_rng(3).random(BIG // 8 + 1000)  # > 64 MiB
    blob = bytes(range(256)) * (BIG // 256)
    with zdf.connect(cluster.master_addr) as client:
        one, other = client.scatter([array, blob])
        total = client.submit(examples.total, one).result(60)["sum"]
        assert total == float(array.sum())
        assert client.submit("builtins:len", other).result(60) == len(blob)
        # A task returns the scattered value whole: bit for bit what was given.
        np.testing.assert_array_equal(client.submit(examples.echo, one).result(60), array)
        everywhere = client.scatter(array, broadcast=True)  # to both executors' workers
        sums = client.gather([client.submit(examples.total, everywhere) for _ in range(4)], 60)
        assert [s["sum"] for s in sums] == [float(array.sum())] * 4


@pytest.mark.cluster(
    executors=1, workers=1, secure=False, extra_env={"ZDF_MAX_VALUE_BYTES": "8MiB"}
)
def test_a_scattered_value_over_the_limit_is_refused_at_once(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as client:
        started = time.monotonic()
        with pytest.raises(LimitExceeded, match=r"cannot scatter .* \(max-value-bytes\)"):
            client.scatter(b"x" * (9 << 20))
        assert time.monotonic() - started < 1
        kept = client.scatter(b"x" * (7 << 20))  # under the limit, over the chunk threshold
        assert client.submit("builtins:len", kept).result(30) == 7 << 20
