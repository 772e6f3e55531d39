"""Raft-lite consensus as a pure state machine: messages and a clock in, actions out.

Theory of operation. ``RaftCore`` does no I/O. The replica feeds it peer
messages (``step``), the clock (``tick``), client proposals (``propose``) and
linearizable-read requests (``read_index``); it edits its ``RaftLog`` in memory
and queues messages in ``outbox``. The driver then, once per reactor wake-up:
sends ``early`` messages (a leader's appends may leave before its own fsync),
flushes the log (term, vote and entries in one synced write), calls
``on_persisted``, sends ``outbox`` (replies that promise durable state), and
applies entries up to ``commit_index``. Everything the rules below need is here:

- roles and their allowed transitions are the table ``TRANSITIONS``;
- elections: PreVote first (no term bump unless a majority would vote), then
  Vote with the election restriction (candidate's log at least as up to date);
- a replica that heard from a leader within the election timeout -- or started
  less than one election timeout ago -- ignores (pre)votes: a rejoining node
  cannot disrupt a healthy leader, and the leader's read lease stays sound;
- appends check prevLogIndex/prevLogTerm; the log is truncated only where an
  entry really conflicts, never on a late or duplicate append;
- a leader commits by counting only entries of its own term (it appends a
  no-op when elected) and counts itself only up to its persisted index;
- CheckQuorum: every append carries the leader's round number ``seq``; a
  leader whose latest round acknowledged by a majority is older than one
  election timeout steps down (and so stops acknowledging anything);
- reads: a leader with a valid lease (a majority acknowledged a round sent
  less than ``LEASE_RATIO`` election timeouts ago) answers at its commit index
  at once; otherwise it waits for a majority to acknowledge a fresh round
  (ReadIndex). Either way only after an entry of its term is committed.

Lease clock assumption: the replicas' monotonic clocks advance at rates within
``1 - LEASE_RATIO`` (20 %) of each other; no synchronisation of wall clocks.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from zdf.metastore.raft.log import NO_VOTE, Entry, RaftLog
from zdf.metastore.raft.messages import (
    Append,
    AppendReply,
    Message,
    SnapshotReply,
    Vote,
    VoteReply,
)
from zdf.wire.codec import packb

LEASE_RATIO = 0.8
MAX_APPEND_BYTES = 1 << 20
MAX_INFLIGHT_ENTRIES = 20_000
NOOP_PAYLOAD = packb({"op": "noop"})


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


TRANSITIONS: dict[Role, frozenset[Role]] = {
    Role.FOLLOWER: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE}),
    Role.PRE_CANDIDATE: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE}),
    Role.CANDIDATE: frozenset({Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER}),
    Role.LEADER: frozenset({Role.FOLLOWER}),
}


@dataclass(frozen=True, slots=True)
class Timing:
    election_timeout: float = 0.3
    """Followers wait 1-2 times this for a leader before they campaign."""
    heartbeat_interval: float = 0.05


@dataclass(slots=True)
class Peer:
    name: str
    next_index: int = 1
    match_index: int = 0
    acked_seq: int = 0
    last_ack: float = 0.0
    addr: str = ""
    snapshotting: bool = False


@dataclass(slots=True)
class PendingRead:
    ctx: Any
    index: int
    seq: int


@dataclass(slots=True)
class Outputs:
    early: list[tuple[str, Message]] = field(default_factory=list)
    outbox: list[tuple[str, Message]] = field(default_factory=list)
    ready_reads: list[tuple[Any, int]] = field(default_factory=list)
    failed_reads: list[Any] = field(default_factory=list)
    need_snapshot: set[str] = field(default_factory=set)
    snapshot_acks: list[tuple[str, SnapshotReply]] = field(default_factory=list)
    role_changed: bool = False


class RaftCore:
    def __init__(
        self,
        name: str,
        members: Iterable[str],
        log: RaftLog,
        *,
        addr: str = "",
        timing: Timing | None = None,
        commit_index: int = 0,
        now: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.addr = addr
        self.log = log
        self.timing = timing or Timing()
        self.members = sorted(set(members) | {name})
        self.peers = {m: Peer(m) for m in self.members if m != name}
        self.quorum = len(self.members) // 2 + 1
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.leader_addr = ""
        self.commit_index = max(commit_index, log.snap_index)
        self.out = Outputs()
        self._rng = rng or random.Random()
        self._votes: set[str] = set()
        self._vote_fence = now + self.timing.election_timeout  # see the module docstring
        self._election_due = 0.0
        self._heartbeat_due = 0.0
        self._seq = 0
        self._sent_at: dict[int, float] = {}
        self._leader_since = 0.0
        self._reads: list[PendingRead] = []
        self._reads_before_commit: list[Any] = []
        self._round_wanted = False  # a pending ReadIndex needs a fresh round to all
        self._append_wanted = False  # new entries (or acks) since the last pump
        self._reset_election_timer(now)
        if not self.peers:
            self._election_due = now  # a single replica elects itself at once

    # -- roles -----------------------------------------------------------------------
    def _set_role(self, role: Role) -> None:
        if role not in TRANSITIONS[self.role]:
            raise AssertionError(f"raft: {self.role.value} -> {role.value} is not allowed")
        if role is not self.role:
            self.out.role_changed = True
        self.role = role

    def _become_follower(self, term: int, leader: str | None, now: float) -> None:
        if term > self.log.term:
            self.log.set_hard_state(term, NO_VOTE)
        if self.role is Role.LEADER or leader != self.leader:
            self.out.role_changed = True
        self._set_role(Role.FOLLOWER)
        self.leader = leader
        if leader is None:
            self.leader_addr = ""
        self._fail_reads()
        self._reset_election_timer(now)

    def _campaign(self, now: float) -> None:
        self._set_role(Role.PRE_CANDIDATE)
        self.leader, self.leader_addr = None, ""
        self._votes = {self.name}
        self._reset_election_timer(now)
        ask = Vote(self.log.term + 1, self.log.last_index, self.log.last_term, pre=True)
        for peer in self.peers:
            self.out.outbox.append((peer, ask))
        self._check_pre_votes(now)

    def _check_pre_votes(self, now: float) -> None:
        if self.role is Role.PRE_CANDIDATE and len(self._votes) >= self.quorum:
            self._set_role(Role.CANDIDATE)
            self.log.set_hard_state(self.log.term + 1, self.name)
            self._votes = {self.name}
            self._reset_election_timer(now)
            ask = Vote(self.log.term, self.log.last_index, self.log.last_term)
            for peer in self.peers:
                self.out.outbox.append((peer, ask))
            self._check_votes(now)

    def _check_votes(self, now: float) -> None:
        if self.role is Role.CANDIDATE and len(self._votes) >= self.quorum:
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        self._set_role(Role.LEADER)
        self.leader, self.leader_addr = self.name, self.addr
        self._leader_since = now
        self._seq += 1
        self._sent_at = {self._seq: now}
        for peer in self.peers.values():
            peer.next_index = self.log.last_index + 1
            peer.match_index = 0
            peer.acked_seq = 0
            peer.snapshotting = False
        self.log.append([(self.log.term, NOOP_PAYLOAD)])
        self._broadcast(now, new_round=False)

    def _reset_election_timer(self, now: float) -> None:
        timeout = self.timing.election_timeout
        self._election_due = now + timeout * (1.0 + self._rng.random())

    # -- clock -------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.role is Role.LEADER:
            if self.peers and now - self._quorum_sent_at() > self.timing.election_timeout:
                self._become_follower(self.log.term, None, now)  # CheckQuorum
                return
            if now >= self._heartbeat_due:
                for peer in self.peers.values():
                    stalled = now - peer.last_ack > 2 * self.timing.heartbeat_interval
                    if stalled and peer.next_index > peer.match_index + 1:
                        peer.next_index = peer.match_index + 1  # resend what may be lost
                self._broadcast(now)
        elif now >= self._election_due:
            self._campaign(now)

    # -- proposals and reads -------------------------------------------------------------
    def propose(self, payloads: list[bytes], now: float) -> int | None:
        """Append commands; returns the index of the first, or None if not the leader."""
        if self.role is not Role.LEADER:
            return None
        first = self.log.last_index + 1
        self.log.append([(self.log.term, p) for p in payloads])
        self._append_wanted = True
        return first

    def read_index(self, ctx: Any, now: float) -> bool:
        """Queue a linearizable read; it appears in ``out.ready_reads`` with its index."""
        if self.role is not Role.LEADER:
            return False
        if self.log.term_at(self.commit_index) != self.log.term:
            self._reads_before_commit.append(ctx)
        elif not self.peers or now < self.lease_until():
            self.out.ready_reads.append((ctx, self.commit_index))
        else:
            self._reads.append(PendingRead(ctx, self.commit_index, self._seq + 1))
            self._round_wanted = True
        return True

    def lease_until(self) -> float:
        return self._quorum_sent_at() + LEASE_RATIO * self.timing.election_timeout

    def pump(self, now: float) -> None:
        """End of a batch of inputs: at most one append per peer for all that is new.

        Proposals and acknowledgements of one wake-up share it, so a follower gets
        one message (and does one fsync) for them. Only a pending ReadIndex needs
        a new round to every peer; plain appends reuse the current round number
        (a round's send time is then earlier than the real one: the lease and
        CheckQuorum only get more cautious), and peers that have everything get
        nothing -- the heartbeat keeps them and the lease fresh.
        """
        if self.role is Role.LEADER:
            if self._round_wanted:
                self._broadcast(now)
            elif self._append_wanted:
                last = self.log.last_index
                for peer in self.peers.values():
                    inflight = peer.next_index - 1 - peer.match_index
                    if peer.next_index <= last and inflight < MAX_INFLIGHT_ENTRIES:
                        self._send_append(peer)
        self._round_wanted = self._append_wanted = False

    def has_work(self) -> bool:
        """Whether the driver has anything to do for what was fed in since it last ran."""
        out = self.out
        return bool(
            self._append_wanted
            or self._round_wanted
            or self.log.dirty
            or out.early
            or out.outbox
            or out.ready_reads
            or out.failed_reads
            or out.need_snapshot
            or out.snapshot_acks
            or out.role_changed
        )

    def on_persisted(self, now: float) -> None:
        if self.role is Role.LEADER:
            self._advance_commit(now)

    def _fail_reads(self) -> None:
        self.out.failed_reads.extend(r.ctx for r in self._reads)
        self.out.failed_reads.extend(self._reads_before_commit)
        self._reads.clear()
        self._reads_before_commit.clear()

    # -- replication (leader) ------------------------------------------------------------
    def _broadcast(self, now: float, *, new_round: bool = True) -> None:
        if new_round:
            self._seq += 1
            self._sent_at[self._seq] = now
        self._heartbeat_due = now + self.timing.heartbeat_interval
        for peer in self.peers.values():
            self._send_append(peer)
        if not self.peers:
            self._advance_reads()

    def _send_append(self, peer: Peer) -> None:
        if peer.snapshotting:
            return
        prev = peer.next_index - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            if prev < self.log.snap_index:
                peer.snapshotting = True
                self.out.need_snapshot.add(peer.name)
                return
            prev = self.log.last_index  # ahead of our log: probe from the end
            prev_term = self.log.last_term
            peer.next_index = prev + 1
        entries: list[Entry] = []
        if peer.next_index - 1 - peer.match_index < MAX_INFLIGHT_ENTRIES:
            entries = self.log.slice(peer.next_index, self.log.last_index + 1, MAX_APPEND_BYTES)
        msg = Append(
            self.log.term,
            prev,
            prev_term,
            tuple(entries),
            self.commit_index,
            self._seq,
            self.addr,
        )
        peer.next_index = prev + len(entries) + 1
        self.out.early.append((peer.name, msg))

    def _on_append_reply(self, sender: str, msg: AppendReply, now: float) -> None:
        peer = self.peers[sender]
        self._acked(peer, msg.seq, now)
        if msg.addr:
            peer.addr = msg.addr
        if msg.success:
            if msg.match > peer.match_index:
                peer.match_index = msg.match
                self._advance_commit(now)
            peer.next_index = max(peer.next_index, peer.match_index + 1)
            if peer.next_index <= self.log.last_index:
                self._append_wanted = True  # sent by ``pump``, with this wake-up's proposals
        else:
            peer.next_index = max(peer.match_index + 1, min(peer.next_index - 1, msg.match + 1))
            self._send_append(peer)

    def _acked(self, peer: Peer, seq: int, now: float) -> None:
        peer.last_ack = now
        if seq > peer.acked_seq and seq <= self._seq:
            peer.acked_seq = seq
            self._advance_reads()

    def _quorum_seq(self) -> int:
        acked = sorted([self._seq, *(p.acked_seq for p in self.peers.values())], reverse=True)
        return acked[self.quorum - 1]

    def _quorum_sent_at(self) -> float:
        seq = self._quorum_seq()
        sent = self._sent_at.get(seq)
        return self._leader_since if sent is None else max(sent, self._leader_since)

    def _advance_commit(self, now: float) -> None:
        matches = sorted(
            [self.log.persisted_index, *(p.match_index for p in self.peers.values())],
            reverse=True,
        )
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.log.term:
            self.commit_index = candidate
            if self._reads_before_commit:
                waiting, self._reads_before_commit = self._reads_before_commit, []
                for ctx in waiting:
                    self.read_index(ctx, now)

    def _advance_reads(self) -> None:
        seq = self._quorum_seq()
        if self._reads and self._reads[0].seq <= seq:
            keep = []
            for read in self._reads:
                if read.seq <= seq:
                    self.out.ready_reads.append((read.ctx, read.index))
                else:
                    keep.append(read)
            self._reads = keep
        for old in [s for s in self._sent_at if s < seq]:
            del self._sent_at[old]

    # -- snapshots (leader side) --------------------------------------------------------
    def snapshot_round(self) -> int:
        return self._seq

    def _on_snapshot_reply(self, sender: str, msg: SnapshotReply, now: float) -> None:
        peer = self.peers[sender]
        self._acked(peer, msg.seq, now)
        if msg.done:
            peer.snapshotting = False
            peer.match_index = max(peer.match_index, msg.index)
            peer.next_index = max(peer.next_index, msg.index + 1)
            self._advance_commit(now)
            self._send_append(peer)
        else:
            self.out.snapshot_acks.append((sender, msg))

    def snapshot_failed(self, name: str) -> None:
        """The driver gave up sending a snapshot (it will be tried again)."""
        peer = self.peers.get(name)
        if peer is not None:
            peer.snapshotting = False

    # -- messages ------------------------------------------------------------------------
    def step(self, sender: str, msg: Message, now: float) -> None:
        """Handle one peer message; an unknown sender's message is ignored."""
        if sender not in self.peers:
            return
        if isinstance(msg, Vote):
            self._on_vote(sender, msg, now)
        elif isinstance(msg, VoteReply):
            self._on_vote_reply(sender, msg, now)
        elif isinstance(msg, Append):
            self._on_append(sender, msg, now)
        elif isinstance(msg, AppendReply | SnapshotReply):
            if msg.term > self.log.term:
                self._become_follower(msg.term, None, now)
            elif self.role is Role.LEADER and msg.term == self.log.term:
                if isinstance(msg, AppendReply):
                    self._on_append_reply(sender, msg, now)
                else:
                    self._on_snapshot_reply(sender, msg, now)

    def _log_ok(self, msg: Vote) -> bool:
        mine = (self.log.last_term, self.log.last_index)
        return (msg.last_term, msg.last_index) >= mine

    def _on_vote(self, sender: str, msg: Vote, now: float) -> None:
        fenced = self.role is Role.LEADER or now < self._vote_fence
        if msg.term > self.log.term and fenced:
            return  # a leader is alive: ignore (see the module docstring)
        if msg.pre:
            granted = msg.term > self.log.term and self._log_ok(msg)
            term = msg.term if granted else self.log.term
            self.out.outbox.append((sender, VoteReply(term, granted, pre=True)))
            return
        if msg.term > self.log.term:
            self._become_follower(msg.term, None, now)
        granted = (
            msg.term == self.log.term and self.log.vote in (NO_VOTE, sender) and self._log_ok(msg)
        )
        if granted:
            self.log.set_hard_state(self.log.term, sender)
            self._reset_election_timer(now)
        self.out.outbox.append((sender, VoteReply(self.log.term, granted)))

    def _on_vote_reply(self, sender: str, msg: VoteReply, now: float) -> None:
        if msg.pre:
            if self.role is Role.PRE_CANDIDATE and msg.term == self.log.term + 1:
                if msg.granted:
                    self._votes.add(sender)
                    self._check_pre_votes(now)
            elif msg.term > self.log.term and not msg.granted:
                self._become_follower(msg.term, None, now)
            return
        if msg.term > self.log.term:
            self._become_follower(msg.term, None, now)
        elif self.role is Role.CANDIDATE and msg.term == self.log.term and msg.granted:
            self._votes.add(sender)
            self._check_votes(now)

    def accept_leader(self, sender: str, term: int, leader_addr: str, now: float) -> bool:
        """Common part of Append and Snapshot: False if the message is from a stale term."""
        if term < self.log.term:
            return False
        if term > self.log.term or self.role is not Role.FOLLOWER or self.leader != sender:
            self._become_follower(term, sender, now)
        self.leader_addr = leader_addr or self.leader_addr
        self.peers[sender].addr = self.leader_addr
        self._vote_fence = now + self.timing.election_timeout
        self._reset_election_timer(now)
        return True

    def _on_append(self, sender: str, msg: Append, now: float) -> None:
        if not self.accept_leader(sender, msg.term, msg.leader_addr, now):
            self.out.outbox.append(
                (sender, AppendReply(self.log.term, False, 0, msg.seq, self.addr))
            )
            return
        log = self.log
        prev, prev_term, entries = msg.prev_index, msg.prev_term, list(msg.entries)
        if prev < log.snap_index:
            # Entries up to our snapshot are committed, hence the same as the leader's.
            skip = min(log.snap_index - prev, len(entries))
            entries = entries[skip:]
            prev, prev_term = prev + skip, (log.snap_term if entries else prev_term)
            if not entries:
                match = max(prev, msg.prev_index + len(msg.entries))
                reply = AppendReply(log.term, True, min(match, log.snap_index), msg.seq, self.addr)
                self.out.outbox.append((sender, reply))
                return
        if log.term_at(prev) != prev_term:
            hint = log.last_index if prev > log.last_index else log.first_index_of_term(prev) - 1
            self.out.outbox.append(
                (sender, AppendReply(log.term, False, max(hint, 0), msg.seq, self.addr))
            )
            return
        for offset, (term, _) in enumerate(entries):
            index = prev + 1 + offset
            mine = log.term_at(index)
            if mine == term:
                continue  # already have it: a late or duplicate append changes nothing
            if mine is not None:
                if index <= self.commit_index:
                    return  # would rewrite a committed entry: not from a real leader
                log.truncate_from(index)
            log.append(entries[offset:])
            break
        match = prev + len(entries)
        self.commit_index = max(self.commit_index, min(msg.commit, match))
        self._reply_success(sender, match, msg.seq)

    def _reply_success(self, sender: str, match: int, seq: int) -> None:
        """Acknowledge an append; several of one wake-up become one reply.

        Within one term the leader's entries never change, so a success at a
        higher ``match`` implies the lower ones; the leader keeps the highest
        ``match`` and ``seq`` it hears anyway, so one reply with both maxima
        tells it exactly what the separate replies would have.
        """
        outbox = self.out.outbox
        if outbox:
            to, last = outbox[-1]
            if (
                to == sender
                and isinstance(last, AppendReply)
                and last.success
                and last.term == self.log.term
            ):
                match, seq = max(match, last.match), max(seq, last.seq)
                outbox.pop()
        outbox.append((sender, AppendReply(self.log.term, True, match, seq, self.addr)))

    # -- snapshots (follower side) ---------------------------------------------------------
    def snapshot_installed(self, index: int, term: int) -> None:
        self.log.reset_to_snapshot(index, term)
        self.commit_index = max(self.commit_index, index)

    def take_outputs(self) -> Outputs:
        out, self.out = self.out, Outputs()
        return out

    @property
    def leader_since(self) -> float:
        return self._leader_since

    def peer_addr(self, name: str) -> str:
        if name == self.name:
            return self.addr
        peer = self.peers.get(name)
        return "" if peer is None else peer.addr
