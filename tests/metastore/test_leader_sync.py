"""A leader's unsynced writes: its followers commit them, it counts itself only once synced."""

from __future__ import annotations

import random
from typing import Any

import pytest

from zdf.metastore.raft.core import RaftCore, Role, Timing
from zdf.metastore.raft.leader_sync import LeaderSync
from zdf.metastore.raft.log import RaftLog
from zdf.metastore.raft.messages import Append, AppendReply

NAMES = ["a", "b", "c"]


def elected() -> dict[str, RaftCore]:
    nodes = {
        n: RaftCore(n, NAMES, RaftLog(), timing=Timing(0.3, 0.05), rng=random.Random(i))
        for i, n in enumerate(NAMES)
    }
    now = 0.0
    settle = 5  # rounds after the election: the no-op is replicated, every outbox drained
    while settle:
        if any(n.role is Role.LEADER for n in nodes.values()):
            settle -= 1
        now += 0.01
        for name, node in nodes.items():
            node.tick(now)
            node.pump(now)
            node.log.flush()
            node.on_persisted(now)
            out = node.take_outputs()
            for to, msg in out.early + out.outbox:
                nodes[to].step(name, msg, now)
    return nodes


def unsynced_proposal(nodes: dict[str, RaftCore]) -> tuple[RaftCore, int, list[tuple[str, Any]]]:
    """The leader proposes one entry and writes it unsynced: (leader, its index, the
    appends it sent meanwhile)."""
    leader = next(n for n in nodes.values() if n.role is Role.LEADER)
    index = leader.propose([b"\x80"], 1.0)
    assert index is not None
    leader.pump(1.0)
    sent = leader.take_outputs().early
    leader.log.flush(sync=False)
    return leader, index, sent


def test_unsynced_entries_are_written_but_not_persisted() -> None:
    log = RaftLog()
    log.append([(1, b"x"), (1, b"y")])
    log.flush(sync=False)
    assert (log.written_index, log.persisted_index) == (2, 0)
    assert log.unsynced and not log.dirty
    log.flush(sync=True)
    assert (log.written_index, log.persisted_index) == (2, 2) and not log.unsynced


def test_term_vote_and_truncation_are_never_left_unsynced() -> None:
    log = RaftLog()
    log.set_hard_state(2, "b")
    with pytest.raises(AssertionError):
        log.flush(sync=False)
    log.flush()
    log.append([(2, b"x"), (2, b"y")])
    log.flush()
    log.truncate_from(2)
    with pytest.raises(AssertionError):
        log.flush(sync=False)


def test_followers_alone_commit_what_the_leader_has_not_synced() -> None:
    nodes = elected()
    leader, index, sent = unsynced_proposal(nodes)
    leader.on_persisted(1.0)
    acks = []
    for to, msg in sent:
        nodes[to].step(leader.name, msg, 1.0)
        nodes[to].log.flush()
        acks += [(to, m) for _, m in nodes[to].take_outputs().outbox]
    first_to, first = acks[0]
    leader.step(first_to, first, 1.001)
    assert leader.commit_index < index  # one follower + an unsynced leader: no majority
    second_to, second = acks[1]
    leader.step(second_to, second, 1.002)
    assert leader.commit_index >= index  # both followers: a majority without the leader


def test_the_leader_counts_itself_once_synced() -> None:
    nodes = elected()
    leader, index, sent = unsynced_proposal(nodes)
    to, msg = sent[0]
    assert isinstance(msg, Append)
    nodes[to].step(leader.name, msg, 1.0)
    nodes[to].log.flush()
    [(_, ack)] = nodes[to].take_outputs().outbox
    assert isinstance(ack, AppendReply)
    leader.step(to, ack, 1.001)
    assert leader.commit_index < index
    leader.log.flush(sync=True)
    leader.on_persisted(1.002)
    assert leader.commit_index >= index


def test_policy_syncs_when_followers_are_not_enough_or_too_slow() -> None:
    nodes = elected()
    leader = next(n for n in nodes.values() if n.role is Role.LEADER)
    sync = LeaderSync(delay=0.002)
    now = 5.0
    for peer in leader.peers.values():
        peer.last_ack = now
    assert sync.may_defer(leader, now)
    assert not sync.may_defer(leader, now, busy=False)  # idle: sync while the acks travel
    sync.written(leader.log.last_index + 1, now)
    assert sync.may_defer(leader, now + 0.001)
    assert not sync.may_defer(leader, now + 0.003)  # waited too long for its commit
    sync.synced()
    assert sync.next_check() is None
    next(iter(leader.peers.values())).last_ack = now - 1.0  # a follower went quiet
    assert not sync.may_defer(leader, now)
    single = RaftCore("a", ["a"], RaftLog(), timing=Timing(0.3, 0.05))
    assert not LeaderSync().may_defer(single, now)  # alone: its own sync is the commit


def test_committed_entries_stop_waiting_and_a_tick_forces_a_sync() -> None:
    nodes = elected()
    leader = next(n for n in nodes.values() if n.role is Role.LEADER)
    for peer in leader.peers.values():
        peer.last_ack = 5.0
    sync = LeaderSync(delay=0.002)
    sync.written(leader.commit_index, 5.0)  # already committed: nothing waits
    assert not sync.overdue(leader.commit_index, 6.0)
    sync.force = True
    assert not sync.may_defer(leader, 5.0)
    sync.synced()
    assert not sync.force and sync.may_defer(leader, 5.0)
