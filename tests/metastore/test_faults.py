"""Fault tests of the replicated metastore: real processes, proxied peer links.

Every test runs a 3-replica cluster whose peer links each cross a ``LinkProxy``
and kills every process it started (by pid) even when it fails. The short
forms run in CI; ``make fault`` runs the ``slow`` ones, longer and repeated.
Histories of concurrent clients are checked for linearizability.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from zdf.errors import CompactedError, Timeout, ZdfError
from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreCluster, MetastoreProcess
from zdf.wire.codec import Kind, encode, packb
from zdf.wire.sockets import close_socket, make_socket

from .netproxy import ProxyNet
from .workload import Workload

ELECTION_TIMEOUT = 0.3
SNAPSHOT_ARGS = ("--snapshot-entries", "100")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``condition()`` holds; returns the time it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def net() -> Iterator[ProxyNet]:
    proxies = ProxyNet()
    try:
        yield proxies
    finally:
        proxies.close()


@pytest.fixture
def cluster(tmp_path: Path, net: ProxyNet) -> Iterator[MetastoreCluster]:
    metas = MetastoreCluster(str(tmp_path), 3, route=net.route, extra_args=SNAPSHOT_ARGS)
    try:
        metas.start()
        metas.leader()
        yield metas
    except BaseException:
        print(metas.logs())
        raise
    finally:
        metas.kill_all()


def converged(cluster: MetastoreCluster) -> bool:
    """Every replica follows one leader and has applied all the leader had committed."""
    states = {m.name: m.status() for m in cluster.members}
    leaders = [s for s in states.values() if s is not None and s["role"] == "leader"]
    if len(leaders) != 1:
        return False
    leader = leaders[0]
    for name in states:
        fresh = cluster.by_name(name).status() if name != leader["name"] else leader
        if fresh is None or fresh["leader"] != leader["name"]:
            return False
        if fresh["applied_index"] < leader["commit_index"]:
            return False
    return True


def terms(cluster: MetastoreCluster) -> dict[str, int]:
    return {m.name: s["term"] for m in cluster.members if (s := m.status()) is not None}


# -- 1. SIGKILL at random ----------------------------------------------------------------
def kill_rounds(cluster: MetastoreCluster, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    with Workload(cluster.endpoints, seed=seed) as work:
        assert work.wait_acks(10, 20), "no writes before the first kill"
        for _ in range(rounds):
            leader = cluster.leader()
            victim = leader if rng.random() < 0.5 else rng.choice(cluster.members)
            victim.kill()
            assert work.wait_acks(rng.randint(1, 30), 20), "writes stopped after a kill"
            victim.start()
        assert work.wait_acks(10, 20)
    work.final_reads()
    work.verify()
    assert work.acknowledged > 0


def test_sigkill_random_replica_during_writes(cluster: MetastoreCluster) -> None:
    kill_rounds(cluster, rounds=3, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_random_replica_many_rounds(cluster: MetastoreCluster) -> None:
    kill_rounds(cluster, rounds=30, seed=int(time.time()))


# -- 2. leader kill: recovery time ---------------------------------------------------------
def leader_kill_recovery(cluster: MetastoreCluster) -> float:
    with MetaClient(cluster.endpoints, timeout=10.0, attempt_timeout=0.2) as client:
        client.put("warm", "up")
        leader = cluster.leader()
        leader.kill()
        start = time.monotonic()
        client.put("after-kill", "x")
        took = time.monotonic() - start
        leader.start()
        return took


def test_leader_kill_recovery_time(cluster: MetastoreCluster) -> None:
    took = leader_kill_recovery(cluster)
    print(f"writes flowing again {took:.3f}s after the leader was killed")
    assert took < 2.0


@pytest.mark.slow
def test_leader_kill_recovery_time_repeated(cluster: MetastoreCluster) -> None:
    times = sorted(leader_kill_recovery(cluster) for _ in range(8))
    print(f"leader-kill recovery: median {times[len(times) // 2]:.3f}s, max {times[-1]:.3f}s")
    assert times[len(times) // 2] < 1.0


# -- 3. isolated leader --------------------------------------------------------------------
def isolate_leader(cluster: MetastoreCluster, net: ProxyNet, seconds: float) -> None:
    old = cluster.leader()
    others = [m for m in cluster.members if m is not old]
    with Workload(cluster.endpoints, seed=3) as work:
        assert work.wait_acks(5, 10)
        net.isolate(old.name)
        isolated_at = time.monotonic()
        # A write that reaches the isolated leader is appended there but never commits.
        direct = MetaClient([old.addr], timeout=1.0, attempt_timeout=1.0)
        with direct, pytest.raises(Timeout):
            direct.put("isolated", "never")

        def stepped_down() -> bool:
            status = old.status()
            return status is not None and status["role"] != "leader"

        wait_for(stepped_down, 3.0, "the isolated leader to step down")
        # (polled after the 1 s write above; the server logs the exact moment)
        new = cluster.leader(among=others)
        assert new is not old
        assert work.wait_acks(10, 10), "the majority did not take writes"
        remaining = seconds - (time.monotonic() - isolated_at)
        if remaining > 0:
            time.sleep(remaining)  # the fault's duration, not a synchronisation
        net.heal_all()
        took = wait_for(lambda: converged(cluster), 5.0, "convergence after healing")
        print(f"converged {took:.2f}s after healing")
        assert work.wait_acks(5, 10)
    work.final_reads()
    work.verify()
    for member in cluster.members:
        with MetaClient([member.addr]) as local:
            assert local.get("isolated", serializable=True) is None


def test_isolated_leader_steps_down_and_its_entries_go(
    cluster: MetastoreCluster, net: ProxyNet
) -> None:
    isolate_leader(cluster, net, seconds=3.0)


@pytest.mark.slow
def test_isolated_leader_for_ten_seconds(cluster: MetastoreCluster, net: ProxyNet) -> None:
    isolate_leader(cluster, net, seconds=10.0)


def test_isolated_leader_stops_acknowledging_within_an_election_timeout(
    cluster: MetastoreCluster, net: ProxyNet
) -> None:
    old = cluster.leader()
    net.isolate(old.name)
    took = wait_for(
        lambda: (s := old.status()) is not None and s["role"] != "leader",
        3.0,
        "the isolated leader to step down",
    )
    # One election timeout after its last acknowledged round, plus a tick and a poll.
    assert took <= ELECTION_TIMEOUT + 0.15, took
    net.heal_all()
    wait_for(lambda: converged(cluster), 5.0, "convergence")


# -- 4. flaky links ---------------------------------------------------------------------------
def flaky(cluster: MetastoreCluster, net: ProxyNet, seconds: float, *, everywhere: bool) -> int:
    """Delay 75±50 ms and drop 50 % on the leader's link to one follower (both ways),
    or with ``everywhere`` on every link; returns how many terms went by."""
    leader = cluster.leader()
    before = max(terms(cluster).values())
    follower = next(m for m in cluster.members if m is not leader)
    pair = {(leader.name, follower.name), (follower.name, leader.name)}
    with Workload(cluster.endpoints, seed=4, timeout=5.0) as work:
        assert work.wait_acks(5, 10)
        for ends, link in net.links.items():
            if everywhere or ends in pair:
                link.delay, link.drop = (0.075, 0.05), 0.5
        time.sleep(seconds)  # the fault's duration
        net.heal_all()
        wait_for(lambda: converged(cluster), 10.0, "convergence after the flaky period")
        assert work.wait_acks(5, 10)
    work.final_reads()
    work.verify()
    extra = max(terms(cluster).values()) - before
    print(f"flaky for {seconds}s: {extra} extra terms, {work.acknowledged} writes acked")
    return extra


def test_flaky_link(cluster: MetastoreCluster, net: ProxyNet) -> None:
    assert flaky(cluster, net, 4.0, everywhere=False) == 0


@pytest.mark.slow
def test_flaky_link_ten_seconds(cluster: MetastoreCluster, net: ProxyNet) -> None:
    assert flaky(cluster, net, 10.0, everywhere=False) == 0


@pytest.mark.slow
def test_flaky_everywhere_ten_seconds(cluster: MetastoreCluster, net: ProxyNet) -> None:
    # Every message crosses a 50 % loss both ways: elections happen, but few.
    assert flaky(cluster, net, 10.0, everywhere=True) <= 15


# -- 5. a paused leader ------------------------------------------------------------------------
def pause_leader(cluster: MetastoreCluster, seed: int) -> None:
    old = cluster.leader()
    writers = Workload(cluster.endpoints, seed=seed, read_ratio=0.3, tag=f"pause{seed}")
    pinned = Workload([old.addr], clients=2, seed=seed + 1, read_ratio=1.0, tag=f"pause{seed}")
    with writers, pinned:
        assert writers.wait_acks(5, 10)
        old.pause()
        try:
            pause_end = time.monotonic() + 2 * ELECTION_TIMEOUT
            cluster.leader(among=[m for m in cluster.members if m is not old])
            time.sleep(max(0.0, pause_end - time.monotonic()))  # the fault's duration
        finally:
            old.resume()
        assert writers.wait_acks(10, 10)
    writers.final_reads()
    writers.ops.extend(pinned.ops)
    writers.verify()
    assert not pinned.revision_violations


def test_paused_leader_serves_no_stale_read(cluster: MetastoreCluster) -> None:
    pause_leader(cluster, seed=5)


@pytest.mark.slow
def test_paused_leader_repeatedly(cluster: MetastoreCluster) -> None:
    for round_ in range(8):
        pause_leader(cluster, seed=50 + round_)


# -- 6. total restarts -------------------------------------------------------------------------
def restart_all(cluster: MetastoreCluster, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    written: dict[str, str] = {}
    last_terms: dict[str, int] = {}
    for round_ in range(rounds):
        with MetaClient(cluster.endpoints, timeout=10.0) as client:
            for i in range(20):
                key, value = f"total/{round_}/{i}", f"v{round_}-{i}"
                client.put(key, value)
                written[key] = value
        current = terms(cluster)
        for name, term in current.items():
            assert term >= last_terms.get(name, 0), (name, term, last_terms)
        last_terms.update(current)
        for member in cluster.members:
            member.kill()
        order = cluster.members[:]
        rng.shuffle(order)
        for member in order:
            member.start_process()
        for member in order:
            member.wait_ready(20)
        cluster.leader()
        for name, term in terms(cluster).items():
            assert term >= last_terms.get(name, 0), (name, term, last_terms)
        with MetaClient(cluster.endpoints, timeout=10.0) as client:
            kvs = {kv.key.decode(): kv.value.decode() for kv in client.range("total/")}
        assert kvs == written


def test_kill_all_and_restart_in_random_order(cluster: MetastoreCluster) -> None:
    restart_all(cluster, rounds=2, seed=6)


@pytest.mark.slow
def test_kill_all_and_restart_repeatedly(cluster: MetastoreCluster) -> None:
    restart_all(cluster, rounds=10, seed=int(time.time()))


# -- 7. leases across a leader kill ------------------------------------------------------------
def test_lease_survives_a_leader_kill(cluster: MetastoreCluster) -> None:
    stop = threading.Event()
    failures: list[str] = []
    with MetaClient(cluster.endpoints, timeout=5.0) as client:
        lease = client.lease_grant(2.0)
        client.put("svc/me", "alive", lease=lease)

        def keepalive() -> None:
            with MetaClient(cluster.endpoints, timeout=5.0, attempt_timeout=0.3) as own:
                while not stop.wait(0.4):
                    try:
                        own.lease_keepalive(lease)
                    except ZdfError as exc:
                        failures.append(repr(exc))

        thread = threading.Thread(target=keepalive, daemon=True)
        thread.start()
        try:
            old = cluster.leader()
            old.kill()
            cluster.leader(among=[m for m in cluster.members if m is not old])
            old.start()
            deadline = time.monotonic() + 3.0  # longer than the TTL
            while time.monotonic() < deadline:
                assert client.get("svc/me") is not None, "the lease expired across the kill"
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(10)
        assert not failures, failures
        # Without keepalives the new leader expires it (TTL 2 s, plus the check period).
        wait_for(lambda: client.get("svc/me") is None, 6.0, "the lease to expire")


# -- 8. watch resume across a cut --------------------------------------------------------------
def test_watch_resumes_across_a_cut_without_gap_or_duplicate(
    cluster: MetastoreCluster,
) -> None:
    with MetaClient(cluster.endpoints, timeout=10.0) as client:
        first = client.put("w/0", "0")
        watch = client.watch("w/", start_revision=first)
        try:
            served_by = cluster.members[0]  # a watch starts on the first endpoint
            revisions = [int(first)]
            for i in range(1, 40):
                if i == 15:
                    served_by.kill()  # the cut
                if i == 30:
                    served_by.start()
                revisions.append(int(client.put(f"w/{i}", str(i))))
            seen: list[int] = []
            deadline = time.monotonic() + 20
            while len(seen) < len(revisions) and time.monotonic() < deadline:
                event = watch.get(0.5)
                if event is not None:
                    seen.append(event.revision)
            assert seen == revisions
            assert watch.poll(0.3) == []
            assert watch.resubscribes >= 1
        finally:
            watch.close()
        client.compact(revisions[10])
        wait_for(lambda: converged(cluster), 5.0, "every replica to apply the compaction")
        with pytest.raises(CompactedError):
            client.watch("w/", start_revision=revisions[5]).close()


# -- snapshots ---------------------------------------------------------------------------------
def test_lagging_follower_gets_a_snapshot(cluster: MetastoreCluster) -> None:
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    follower.kill()
    with MetaClient(cluster.endpoints, timeout=10.0) as client:
        for i in range(300):  # far more than snapshot-entries (100)
            client.put(f"snap/{i % 50}", str(i))
        follower.start()
        wait_for(lambda: converged(cluster), 10.0, "the follower to catch up")
        status = follower.status()
        assert status is not None and status["snapshots_installed"] >= 1
        assert status["log_start"] > 1
        with MetaClient([follower.addr]) as local:
            kv = local.get("snap/49", serializable=True)
            assert kv is not None and kv.value == b"299"


# -- hostile peers -----------------------------------------------------------------------------
def test_malformed_peer_messages_never_crash_a_replica(cluster: MetastoreCluster) -> None:
    target: MetastoreProcess = cluster.members[0]
    bad_bodies = [
        ("raft_append", {"term": "x"}),
        (
            "raft_append",
            {"term": 1, "prev_index": 0, "prev_term": 0, "commit": 0, "entries": [[1]]},
        ),
        ("raft_append", {"term": 1, "prev_index": -5, "prev_term": 0, "commit": 0}),
        ("raft_vote", None),
        ("raft_vote_reply", {"term": 2**64 - 1, "granted": True}),
        (
            "raft_snapshot",
            {"term": 0, "index": 1, "index_term": 1, "offset": 0, "items": [[b"k"]], "done": True},
        ),
        ("raft_snapshot_reply", {"term": 0}),
        ("raft_applied", [1, b"\xc1"]),
        ("raft_applied", [1, "not bytes"]),
        # A hint that would write a Raft log entry and move the applied index.
        ("raft_applied", [1, packb([1, 5, 1, 0, [b"e" + bytes(8), b"x"], [], [9, 0, 1], 0])]),
        ("raft_applied", [1, packb([1, 1, 1, 0, [b"k"], [[None]], [1, 0], 0])]),
        ("no_such_op", {}),
    ]
    for identity in (b"meta-2", b"evil", b"\xff\xfe"):
        sock = make_socket(zmq.DEALER, connect=cluster.peer_addrs[target.name], identity=identity)
        try:
            for op, body in bad_bodies:
                sock.send(encode(Kind.EVENT, op, 0, body))
            for frame in (b"", b"\xc1", b"garbage", encode(Kind.REQUEST, "raft_vote", 1, {})):
                sock.send(frame)
            sock.send_multipart([b"a", b"b", b"c"])
        finally:
            time.sleep(0.2)  # let the frames leave before linger 0 drops them
            close_socket(sock)
    with MetaClient(cluster.endpoints, timeout=10.0) as client:
        assert client.put("still", "fine") > 0
    assert target.running
    wait_for(lambda: converged(cluster), 5.0, "convergence")
    for member in cluster.members:
        assert "Traceback" not in member.log_tail(100_000), member.name
