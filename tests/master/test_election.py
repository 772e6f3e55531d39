"""Master election against a real metastore process: fencing and the standby's watch.

Masters run in-process, each on a thread of its own (its reactor, its sockets, its
``MetaClient``), so that a test can depose one by hand: delete the election key
under its still-live lease and let a rival take it. Nothing here sleeps to
synchronise; every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from zdf import protocol as P
from zdf.config import MasterConfig
from zdf.errors import NotLeader
from zdf.jobs.spec import JobSpec, TaskSpec
from zdf.localcluster import wait_until
from zdf.master import server
from zdf.master.election import ELECTION_KEY, LostLeadership, MasterElection
from zdf.master.jobs import JobManager
from zdf.master.persist import (
    FRAMEWORK_CHECKPOINTS,
    FRAMEWORK_ENDPOINTS,
    FRAMEWORK_JOBS,
    FrameworkStore,
)
from zdf.master.server import Master
from zdf.metastore.client import MetaClient
from zdf.metastore.process import MetastoreProcess
from zdf.wire import RpcClient
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
RIVAL_TTL = 30.0
"""Long enough that the rival's lease never expires by itself during a test."""


def election(meta: MetaClient, name: str, ttl: float = RIVAL_TTL) -> MasterElection:
    return MasterElection(meta, {"name": name, "addr": f"{HOST}:1", "heartbeat_addr": ""}, ttl)


def one_task_job() -> JobSpec:
    return JobSpec("j", "function", [TaskSpec("t0", "function", "m:f", {})])


class MasterThread:
    """A ``Master`` built, run and closed on its own thread; ``stop()`` joins it."""

    def __init__(self, name: str, meta_addr: str) -> None:
        self.config = MasterConfig(
            name=name,
            master_addr=f"{HOST}:{free_port()}",
            heartbeat_addr=f"{HOST}:{free_port()}",
            meta_endpoints=[meta_addr],
        )
        self.meta = MetaClient(meta_addr, timeout=5.0)
        self.master: Master | None = None
        self._built = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.master = Master(self.config, self.meta)
        finally:
            self._built.set()
        try:
            self.master.run()
        finally:
            self.master.close()

    def start(self) -> Master:
        self._thread.start()
        assert self._built.wait(10), "the master was not built in time"
        assert self.master is not None, "the master failed to start (see the log)"
        return self.master

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self.master is not None:
            self.master.reactor.stop()
        self._thread.join(10)
        self.meta.close()
        assert not self._thread.is_alive(), "the master thread did not stop"


@pytest.fixture
def masters(metastore: MetastoreProcess) -> Iterator[list[MasterThread]]:
    """Masters a test starts (``append``); every one is stopped and joined afterwards."""
    started: list[MasterThread] = []
    try:
        yield started
    finally:
        for thread in started:
            thread.stop()


def start_master(masters: list[MasterThread], name: str, meta_addr: str) -> Master:
    thread = MasterThread(name, meta_addr)
    masters.append(thread)
    return thread.start()


def test_a_deposed_leaders_writes_are_refused(meta: MetaClient) -> None:
    old = election(meta, "old")
    assert old.campaign() is not None and old.epoch is not None
    old_store = FrameworkStore(meta)
    old_store.epoch = old.epoch
    job = JobManager().submit(one_task_job())
    old_store.save_checkpoint(job.job_id, "t0", b"old-1")
    old_store.save_endpoint(job.job_id, "t0", "out", "tcp://old")

    # Deposed without noticing: the key goes, its lease stays alive, a rival takes it.
    meta.delete(ELECTION_KEY)
    new = election(meta, "new")
    assert new.campaign() is not None and new.epoch is not None and new.epoch > old.epoch
    new_store = FrameworkStore(meta)
    new_store.epoch = new.epoch
    new_store.save_checkpoint(job.job_id, "t0", b"new-1")
    new_store.save_endpoint(job.job_id, "t0", "out", "tcp://new")
    assert old.keepalive(), "its lease is alive: only the fence can stop it"

    checkpoint = f"{FRAMEWORK_CHECKPOINTS}{job.job_id}/t0"
    endpoint = f"{FRAMEWORK_ENDPOINTS}{job.job_id}/t0/out"
    with pytest.raises(LostLeadership):
        old_store.save_job(job)
    with pytest.raises(LostLeadership):
        old_store.save_checkpoint(job.job_id, "t0", b"old-2")
    with pytest.raises(LostLeadership):
        old_store.save_endpoint(job.job_id, "t0", "out", "tcp://old-2")
    with pytest.raises(LostLeadership):
        old_store.drop_checkpoints(job.job_id)

    assert meta.get(FRAMEWORK_JOBS + job.job_id) is None
    assert (kv := meta.get(checkpoint)) is not None and kv.value == b"new-1"
    assert (kv := meta.get(endpoint)) is not None and kv.value == b"tcp://new"
    new_store.drop_checkpoints(job.job_id)  # the leader's own writes still go through
    assert meta.get(checkpoint) is None and meta.get(endpoint) is None
    old.resign()
    new.resign()


def test_a_deposed_master_is_refused_and_steps_down(
    metastore: MetastoreProcess, meta: MetaClient, masters: list[MasterThread]
) -> None:
    master = start_master(masters, "m1", metastore.addr)
    wait_until(lambda: master.leading, 10, "m1 to lead")
    meta.delete(ELECTION_KEY)  # m1's lease lives on: its keepalive keeps succeeding
    rival = election(meta, "rival")
    assert rival.campaign() is not None and rival.epoch is not None

    with RpcClient(master.config.master_addr, timeout=5.0) as client, pytest.raises(NotLeader):
        client.call(P.SUBMIT_JOB, {"spec": one_task_job().to_dict()}, retry=False)
    wait_until(lambda: not masters[0].running, 5, "m1 to stop")
    assert master.lost_leadership and not master.leading
    assert meta.range(FRAMEWORK_JOBS) == [], "the refused job was not recorded"
    kv = meta.get(ELECTION_KEY)
    assert kv is not None and kv.create_revision == rival.epoch, "the rival still leads"
    rival.resign()


def test_a_standby_campaigns_as_soon_as_the_key_is_deleted(
    metastore: MetastoreProcess,
    meta: MetaClient,
    masters: list[MasterThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the safety-net look at the key a minute apart, only the watch can be quick.
    monkeypatch.setattr(server, "ELECTION_RECHECK", 60.0)
    rival = election(meta, "rival")
    assert rival.campaign() is not None and rival.epoch is not None
    standby = start_master(masters, "m1", metastore.addr)
    wait_until(
        lambda: (
            standby._leader_watch is not None
            and standby.leader is not None
            and standby.leader.name == "rival"
        ),
        10,
        "m1 to watch the key as a standby",
    )
    assert not standby.leading
    rival_epoch = rival.epoch

    deleted_at = time.monotonic()
    rival.resign()  # revoking its lease deletes the key: a delete event
    wait_until(lambda: standby.leading, 5, "m1 to take over", interval=0.002)
    took = time.monotonic() - deleted_at
    assert took < 1.0, f"the standby took {took:.3f}s to lead after the delete"
    assert standby.epoch > rival_epoch
    kv = meta.get(ELECTION_KEY)
    assert kv is not None and kv.create_revision == standby.epoch
    assert standby._leader_watch is None, "a leader no longer watches"


def test_a_standby_learns_a_new_leader_from_the_watch(
    metastore: MetastoreProcess,
    meta: MetaClient,
    masters: list[MasterThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A put on the key (another standby won) updates the leader hint it gives clients."""
    monkeypatch.setattr(server, "ELECTION_RECHECK", 60.0)
    first = election(meta, "first")
    assert first.campaign() is not None
    standby = start_master(masters, "m1", metastore.addr)
    wait_until(lambda: standby._leader_watch is not None, 10, "m1 to watch the key")
    # Rewrite the key in place (a put event, no delete) so that the standby has no
    # opening to campaign: only the watch can tell it who leads now.
    lease = meta.lease_grant(RIVAL_TTL)
    meta.put(ELECTION_KEY, b'{"name": "second", "addr": "127.0.0.1:2"}', lease=lease)
    wait_until(
        lambda: standby.leader is not None and standby.leader.name == "second",
        5,
        "m1 to learn the new leader",
    )
    assert standby.leader is not None and standby.leader.addr == f"{HOST}:2"
    assert not standby.leading
    meta.lease_revoke(lease)
    first.resign()
