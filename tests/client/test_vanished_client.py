"""A client that vanishes without closing: its results are dropped from the workers once
the master's client-grace has passed; a client paused for less than the grace keeps them;
one that closes has them dropped at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import zdf
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(120)

GRACE = 3.0
MiB = 1 << 20

# Holds 4 results made through the master and 2 under a lease (lone tasks), then
# takes commands on its stdin: "use" sums its first result in a task.
CLIENT = """
import sys, zdf
from zdf.jobs import examples
client = zdf.connect(sys.argv[1])
held = [client.submit(examples.block, i, 1 << 20) for i in range(4)]
for f in held:
    f.result(30)
lone = [client.submit(examples.block, 10 + i, 1 << 20) for i in range(3)]  # one at a time
for f in lone:
    f.result(30)
print("ready", client.leased_worker is not None, flush=True)
for line in sys.stdin:
    if line.strip() == "use":
        print(client.submit(examples.total, held[0]).result(30)["sum"], flush=True)
"""


@pytest.fixture
def short_grace(tmp_path: object) -> Iterator[LocalCluster]:
    local = LocalCluster(
        str(tmp_path), executors=1, workers=1, extra_env={"ZDF_CLIENT_GRACE": f"{GRACE}s"}
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()


def start_client(local: LocalCluster) -> subprocess.Popen[str]:
    env = {**os.environ, "ZDF_SECURITY_DIR": local.security_dir}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, local.master_addr],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["ready", "True"]  # a lease was used too
    return proc


def stored_bytes(observer: zdf.Client) -> int:
    """What the (only) worker's store holds."""
    return int(observer.submit(examples.store_info).result(30)["bytes"])


def test_a_vanished_clients_results_are_dropped_after_the_grace(
    short_grace: LocalCluster,
) -> None:
    with zdf.connect(short_grace.master_addr) as observer:
        proc = start_client(short_grace)
        try:
            assert stored_bytes(observer) >= 7 * MiB  # 4 through the master, 3 leased
            proc.kill()  # gone without a word
            proc.wait(10)
            killed = time.monotonic()
            wait_until(lambda: stored_bytes(observer) < MiB, GRACE + 20, "the results dropped")
            assert time.monotonic() - killed > GRACE * 0.8  # not before the grace
        finally:
            proc.kill()
            proc.wait(10)


def test_a_client_paused_within_the_grace_keeps_its_results(short_grace: LocalCluster) -> None:
    with zdf.connect(short_grace.master_addr) as observer:
        proc = start_client(short_grace)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(GRACE / 2)  # the pause under test (not a synchronisation)
            os.kill(proc.pid, signal.SIGCONT)
            proc.stdin.write("use\n")
            proc.stdin.flush()
            expected = float(examples.block(0, MiB).sum())
            assert float(proc.stdout.readline()) == expected
            assert stored_bytes(observer) >= 7 * MiB
            proc.stdin.close()  # it ends without closing its client: gone after the grace
            proc.wait(10)
            wait_until(lambda: stored_bytes(observer) < MiB, GRACE + 20, "the results dropped")
        finally:
            proc.kill()
            proc.wait(10)


@pytest.mark.cluster(executors=1, workers=1)  # the default grace: 30 s
def test_a_closed_clients_results_are_dropped_at_once(cluster: LocalCluster) -> None:
    with zdf.connect(cluster.master_addr) as observer:
        client = zdf.connect(cluster.master_addr)
        made = [client.submit(examples.block, i, MiB) for i in range(6)]
        client.gather(made, 30)
        assert stored_bytes(observer) >= 6 * MiB
        client.close()  # says goodbye: no grace to wait for
        wait_until(lambda: stored_bytes(observer) < MiB, 10, "the results dropped")
