"""The Raft core without I/O: a simulated network and a hand-driven clock."""

from __future__ import annotations

import random

from zdf.metastore.raft.core import RaftCore, Role, Timing
from zdf.metastore.raft.log import RaftLog
from zdf.metastore.raft.messages import Append, AppendReply, Vote

NAMES = ["a", "b", "c"]


class Sim:
    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.cut: set[tuple[str, str]] = set()
        self.nodes = {
            n: RaftCore(n, NAMES, RaftLog(), timing=Timing(0.3, 0.05), rng=random.Random(seed + i))
            for i, n in enumerate(NAMES)
        }

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += 0.01
            for node in self.nodes.values():
                node.tick(self.now)
            self.deliver()

    def deliver(self) -> None:
        for _ in range(50):
            moved = False
            for name, node in self.nodes.items():
                node.pump(self.now)
                out = node.take_outputs()
                node.log.flush()
                node.on_persisted(self.now)
                out2 = node.take_outputs()
                for to, msg in out.early + out.outbox + out2.early + out2.outbox:
                    moved = True
                    if (name, to) not in self.cut:
                        self.nodes[to].step(name, msg, self.now)
            if not moved:
                return

    def leaders(self) -> list[RaftCore]:
        return [n for n in self.nodes.values() if n.role is Role.LEADER]


def test_one_leader_is_elected_and_commits_its_noop() -> None:
    sim = Sim()
    sim.run(1.5)
    [leader] = sim.leaders()
    assert leader.commit_index == 1
    assert all(n.log.term == leader.log.term for n in sim.nodes.values())


def test_isolated_leader_steps_down_without_disrupting_the_rest() -> None:
    sim = Sim(1)
    sim.run(1.5)
    [old] = sim.leaders()
    for other in NAMES:
        sim.cut |= {(old.name, other), (other, old.name)}
    index = old.propose([b"\x80"], sim.now)
    sim.run(2.0)
    assert old.role is not Role.LEADER  # CheckQuorum
    [new] = sim.leaders()
    assert new is not old
    term = new.log.term
    sim.cut.clear()
    sim.run(1.0)
    assert sim.leaders() == [new] and new.log.term == term  # PreVote: no disruption
    assert index is not None
    # The old leader's uncommitted entry was replaced by the new leader's log.
    assert old.log.last_index == new.log.last_index >= index
    assert old.log.entry(index) == new.log.entry(index)
    assert old.log.entry(index)[1] != b"\x80"


def test_late_duplicate_append_does_not_truncate() -> None:
    node = RaftCore("b", NAMES, RaftLog(), timing=Timing(0.3, 0.05))
    first = Append(1, 0, 0, ((1, b"x"), (1, b"y")), 0, 1, "")
    node.step("a", first, 0.0)
    late = Append(1, 0, 0, ((1, b"x"),), 0, 1, "")
    node.step("a", late, 0.1)
    assert node.log.last_index == 2
    conflict = Append(2, 1, 1, ((2, b"z"),), 0, 2, "")
    node.step("a", conflict, 0.2)
    assert node.log.last_index == 2 and node.log.term_at(2) == 2


def test_prev_log_mismatch_is_rejected_with_a_hint() -> None:
    node = RaftCore("b", NAMES, RaftLog(), timing=Timing(0.3, 0.05))
    node.step("a", Append(1, 5, 1, ((1, b"x"),), 0, 1, ""), 0.0)
    reply = node.take_outputs().outbox[-1][1]
    assert isinstance(reply, AppendReply) and not reply.success and reply.match == 0


def test_vote_needs_an_up_to_date_log_and_a_quiet_leader() -> None:
    node = RaftCore("b", NAMES, RaftLog(), timing=Timing(0.3, 0.05))
    node.step("a", Append(1, 0, 0, ((1, b"x"),), 0, 1, ""), 0.0)
    node.take_outputs()
    node.step("c", Vote(2, 0, 0), 0.1)  # within the election timeout: ignored
    assert node.take_outputs().outbox == [] and node.log.term == 1
    node.step("c", Vote(2, 0, 0), 1.0)  # stale log: refused
    assert node.log.vote == "" and node.log.term == 2
    node.step("c", Vote(2, 1, 1), 1.1)
    assert node.log.vote == "c"


def test_leader_commits_only_entries_of_its_term_by_counting() -> None:
    sim = Sim(2)
    sim.run(1.5)
    [leader] = sim.leaders()
    others = [n for n in NAMES if n != leader.name]
    sim.cut |= {(leader.name, others[0]), (leader.name, others[1])}
    index = leader.propose([b"\x80"], sim.now)
    sim.deliver()
    assert index is not None and leader.commit_index < index  # no majority yet
    sim.cut.clear()
    sim.run(0.2)
    assert leader.commit_index >= index


def test_acks_and_proposals_of_one_wake_up_share_one_append_per_peer() -> None:
    sim = Sim(3)
    sim.run(1.5)
    [leader] = sim.leaders()
    follower = next(n for n in NAMES if n != leader.name)
    leader.propose([b"\x80"], sim.now)
    leader.pump(sim.now)
    first = leader.take_outputs().early
    assert sorted(to for to, _ in first) == sorted(leader.peers)
    leader.log.flush()
    # The follower's ack arrives, then a new proposal, in the same wake-up.
    msg = next(m for to, m in first if to == follower)
    sim.nodes[follower].step(leader.name, msg, sim.now)
    sim.nodes[follower].log.flush()
    [(_, ack)] = sim.nodes[follower].take_outputs().outbox
    leader.step(follower, ack, sim.now)
    assert leader.take_outputs().early == []  # nothing sent from within the ack
    leader.propose([b"\x81"], sim.now)
    leader.pump(sim.now)
    sent = leader.take_outputs().early
    assert sorted(to for to, _ in sent) == sorted(leader.peers)  # one each, no empty one
    assert all(isinstance(m, Append) and len(m.entries) == 1 for _, m in sent)
    # Caught-up peers get nothing more from a pump with nothing new.
    leader.pump(sim.now)
    assert leader.take_outputs().early == []


def test_acks_of_one_wake_up_become_one_reply() -> None:
    node = RaftCore("b", NAMES, RaftLog(), timing=Timing(0.3, 0.05))
    node.step("a", Append(1, 0, 0, ((1, b"x"),), 0, 3, ""), 0.0)
    node.step("a", Append(1, 1, 1, ((1, b"y"),), 0, 4, ""), 0.0)
    node.step("a", Append(1, 0, 0, ((1, b"x"),), 0, 2, ""), 0.0)  # a late duplicate
    [(to, reply)] = node.take_outputs().outbox
    assert to == "a" and isinstance(reply, AppendReply)
    assert reply.success and reply.match == 2 and reply.seq == 4
    node.step("a", Append(1, 5, 1, (), 0, 5, ""), 0.1)  # a mismatch is not merged
    node.step("a", Append(1, 2, 1, (), 0, 6, ""), 0.1)
    replies = [m for _, m in node.take_outputs().outbox]
    assert [(r.success, r.seq) for r in replies] == [(False, 5), (True, 6)]  # type: ignore[union-attr]
