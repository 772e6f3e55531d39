"""One metastore replica: the Raft core driven by the reactor, applied to ``MetaState``.

Theory of operation: the server hands writes to ``propose`` and linearizable
reads to ``read``; peers' messages arrive through the ``PeerTransport``.
Anything that feeds the core schedules one ``_process``, run once the
socket it came from has no more messages waiting (``process_now``) or at the
latest at the end of the reactor wake-up, so the writes and reads that
arrived together share one append per peer and one fsync (group commit).
``_process`` keeps the order the core's contract asks for:

1. send the leader's appends (they may overtake the leader's own fsync); a
   leader then applies (and answers) what was committed before this wake-up,
   while its followers sync the new entries, instead of after its own fsync;
2. flush the log -- term, vote, truncation and entries in one synced batch.
   A busy leader whose followers can commit without it writes its new
   entries unsynced and syncs later (``LeaderSync``: when its vote is needed,
   when it is idle, and on every tick); once it is no longer leader, every
   flush syncs again;
3. tell the core (the leader may now count itself), send the other messages,
   which promise what step 2 made durable (votes, append acknowledgements);
4. apply committed entries in order (``MetaState.apply_batch``, not synced:
   the log in the same LevelDB is, and LevelDB writes reach the disk in
   order), answer their proposers, release reads waiting for that index (a
   leader does this at once when an acknowledgement commits entries);
5. compact the log once it holds more than ``snapshot-entries`` applied entries.

A proposer hears the result of its own entry only if that entry is still the
one at its index when applied (same term); otherwise, and when leadership is
lost, it gets ``UnknownOutcome`` -- the entry may yet commit under the next
leader, so the client retries with the same request id and the state
machine's dedupe answers the first result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zdf.config import MetastoreConfig
from zdf.errors import NotLeader, ProtocolError, UnknownOutcome, ZdfError
from zdf.metastore.commands import Command
from zdf.metastore.hints import ApplyHint, HintInbox
from zdf.metastore.kv import Event
from zdf.metastore.raft.core import RaftCore, Role, Timing
from zdf.metastore.raft.leader_sync import LeaderSync
from zdf.metastore.raft.log import LevelLog
from zdf.metastore.raft.messages import (
    MAX_CHUNK_BYTES,
    Applied,
    Message,
    Snapshot,
    SnapshotReply,
)
from zdf.metastore.raft.snapshot import SENDER_TIMEOUT, SnapshotReceiver, SnapshotSender, install
from zdf.metastore.raft.transport import PeerTransport, frame
from zdf.metastore.state import MetaState, Result
from zdf.wire.codec import packb, unpackb
from zdf.wire.reactor import Reactor, Timer

log = logging.getLogger(__name__)

MAX_APPLY_BATCH = 1000
MAX_HINTS_QUEUED = 16
TICKS_PER_HEARTBEAT = 2

WriteDone = Callable[[Result], None]
ReadDone = Callable[["ZdfError | None"], None]


@dataclass(slots=True)
class Proposal:
    """A write this leader appended at some index, in ``term``, waiting for its result.

    ``command`` and ``parsed`` are what the entry's payload decodes to: while the
    entry at that index is still of ``term`` (so it is this very entry), the
    leader applies them instead of decoding and validating its own payload.
    """

    term: int
    done: WriteDone
    command: dict[str, Any]
    parsed: Command | None


class Replica:
    def __init__(
        self,
        config: MetastoreConfig,
        state: MetaState,
        reactor: Reactor,
        *,
        on_events: Callable[[list[Event]], None],
        on_reset: Callable[[], None],
        clients_waiting: Callable[[], bool] = lambda: False,
        watching: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self._clients_waiting = clients_waiting
        self.state = state
        self.reactor = reactor
        self._on_events = on_events
        self._on_reset = on_reset
        self._watching = watching  # whether anyone wants events (hints skip decoding them)
        self.log = LevelLog(state.db, applied_index=state.applied_index)
        cluster = config.cluster
        now = time.monotonic()
        self.core = RaftCore(
            config.name,
            cluster,
            self.log,
            addr=config.public_addr,
            timing=Timing(config.election_timeout, config.heartbeat_interval),
            commit_index=state.applied_index,
            now=now,
        )
        self.single = len(cluster) == 1
        self.transport: PeerTransport | None = None
        if not self.single:
            peers = {n: a for n, a in cluster.items() if n != config.name}
            # initial-cluster names where peers dial; with a twin, peer-addr is the bind.
            bind = config.peer_addr if config.advertise_peer_addr else cluster[config.name]
            self.transport = PeerTransport(reactor, config.name, bind, peers, self._on_peer)
            self.transport.on_drained = self.process_now
        self._proposals: dict[int, Proposal] = {}
        self._hints = HintInbox()  # a follower's (zdf.metastore.hints)
        self._hints_out: dict[str, list[bytes]] = {}  # a leader's, by follower, packed
        self._reads_waiting: list[tuple[int, ReadDone]] = []
        self._senders: dict[str, SnapshotSender] = {}
        self._receiver: SnapshotReceiver | None = None
        self._scheduled: Timer | None = None
        self._leader_sync = LeaderSync()
        self._sync_check: Timer | None = None
        self.leader_since_wall = 0.0
        self.stats: dict[str, int] = {
            "elections_won": 0,
            "snapshots_sent": 0,
            "installed": 0,
            "proposed": 0,
            "hinted_entries": 0,
        }
        tick = min(config.heartbeat_interval / TICKS_PER_HEARTBEAT, config.election_timeout / 10)
        self._ticker = reactor.call_every(tick, self._tick)
        self._tick()

    # -- what the server asks ------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    def not_leader(self) -> NotLeader:
        hint = self.core.leader_addr or None
        who = self.core.leader or "unknown"
        return NotLeader(f"{self.config.name} is not the leader (leader: {who})", leader=hint)

    def propose(
        self, command: dict[str, Any], done: WriteDone, parsed: Command | None = None
    ) -> None:
        """Append ``command``; ``done`` gets its result once committed and applied.

        ``parsed``, if given, must be what ``command`` parses to (see ``Proposal``).
        """
        index = self.core.propose([packb(command)], time.monotonic())
        if index is None:
            raise self.not_leader()
        self._proposals[index] = Proposal(self.log.term, done, command, parsed)
        self.stats["proposed"] += 1
        self._schedule()

    def read(self, done: ReadDone) -> None:
        """Call ``done(None)`` once local state is at least as new as the cluster's."""
        if not self.core.read_index(done, time.monotonic()):
            raise self.not_leader()
        self._schedule()

    def close(self) -> None:
        self._ticker.cancel()
        for timer in (self._scheduled, self._sync_check):
            if timer is not None:
                timer.cancel()
        try:
            if self.log.dirty or self.log.unsynced:
                self.log.flush(sync=True)
        finally:
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()
            if self.transport is not None:
                self.transport.close()

    # -- inputs ----------------------------------------------------------------------------
    def _tick(self) -> None:
        self.core.tick(time.monotonic())
        self._expire_senders()
        self._leader_sync.force = self.log.unsynced
        self._process()

    def _on_peer(self, sender: str, msg: Message) -> None:
        if sender not in self.core.peers:
            return
        if isinstance(msg, Applied):
            self._on_hint(msg)
            return
        now = time.monotonic()
        if isinstance(msg, Snapshot):
            self._on_snapshot_chunk(sender, msg, now)
        else:
            self.core.step(sender, msg, now)
            if self.core.commit_index > self.state.applied_index and self.is_leader:
                # An acknowledgement committed entries: answer their writers now, not
                # after the rest of this wake-up (new proposals still share its append).
                self._apply()
            if not self.core.has_work() and self.core.commit_index <= self.state.applied_index:
                return  # e.g. the second acknowledgement of an entry already committed
        self._schedule()

    def process_now(self) -> None:
        """Run what ``_schedule`` asked for now (at the end of a socket's drain)."""
        if self._scheduled is not None:
            self._process()

    def _schedule(self) -> None:
        if self._scheduled is None:
            self._scheduled = self.reactor.call_later(0.0, self._process)

    # -- the loop ----------------------------------------------------------------------------
    def _process(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        for _ in range(4):
            now = time.monotonic()
            was_leader = self.is_leader
            self.core.pump(now)
            out = self.core.take_outputs()
            self._send(out.early)
            self._flush(was_leader and self.is_leader, now)
            self.core.on_persisted(now)
            later = self.core.take_outputs()
            self._send(later.early)
            self._send(out.outbox)
            self._send(later.outbox)
            for o in (out, later):
                self._handle_reads(o.ready_reads, o.failed_reads)
                for name in o.need_snapshot:
                    self._start_snapshot(name)
                for name, reply in o.snapshot_acks:
                    self._continue_snapshot(name, reply)
            if out.role_changed or later.role_changed or was_leader != self.is_leader:
                self._role_changed()
            self._apply()
            if not self.log.dirty and not self.core.out.outbox and not self.core.out.early:
                break

    def _flush(self, leader: bool, now: float) -> None:
        """Step 2 of ``_process``: write the log; synced unless a leader may defer it."""
        log = self.log
        if not log.dirty and not log.unsynced:
            return
        sync = self._leader_sync
        if leader and log.only_entries_dirty and sync.may_defer(self.core, now, self._busy()):
            if log.dirty:
                log.flush(sync=False)
                sync.written(log.written_index, now)
                self._arm_sync_check(now)
            return
        if leader:
            # What is committed already need not wait for this fsync of newer
            # entries: its writers are answered while the followers sync.
            self._apply()
        log.flush(sync=True)
        sync.synced()

    def _busy(self) -> bool:
        """Whether requests or peer messages are already waiting to be read."""
        transport = self.transport
        return self._clients_waiting() or (transport is not None and transport.has_input())

    def _arm_sync_check(self, now: float) -> None:
        due = self._leader_sync.next_check()
        if due is not None and self._sync_check is None:
            self._sync_check = self.reactor.call_later(max(0.0, due - now), self._sync_checked)

    def _sync_checked(self) -> None:
        self._sync_check = None
        if self.is_leader and self.log.unsynced:
            now = time.monotonic()
            if self._leader_sync.overdue(self.core.commit_index, now):
                self._process()
            else:
                self._arm_sync_check(now)

    def _send(self, messages: list[tuple[str, Any]]) -> None:
        transport = self.transport
        if transport is not None:
            hints = self._hints_out
            for to, msg in messages:
                transport.send(to, msg, before=hints.pop(to, ()) if hints else ())

    def _role_changed(self) -> None:
        self._hints.clear()
        self._hints_out.clear()
        if self.is_leader:
            self.stats["elections_won"] += 1
            if not self.leader_since_wall:
                self.leader_since_wall = time.time()
            log.info("metastore %s: leader of term %d", self.config.name, self.log.term)
            return
        if self.leader_since_wall:
            log.info("metastore %s: no longer leader (term %d)", self.config.name, self.log.term)
        self.leader_since_wall = 0.0
        lost = UnknownOutcome("leadership changed before the write committed; retry it")
        proposals, self._proposals = self._proposals, {}
        for proposal in proposals.values():
            proposal.done(lost)
        waiting, self._reads_waiting = self._reads_waiting, []
        for _, read_done in waiting:
            read_done(self.not_leader())

    def _handle_reads(self, ready: list[tuple[Any, int]], failed: list[Any]) -> None:
        for ctx in failed:
            ctx(self.not_leader())
        for ctx, index in ready:
            if index <= self.state.applied_index:
                ctx(None)
            else:
                self._reads_waiting.append((index, ctx))

    def _apply(self) -> None:
        # Written entries only (synced or not): LevelDB keeps the state after them.
        top = min(self.core.commit_index, self.log.written_index)
        leader = self.is_leader and not self.single
        while self.state.applied_index < top:
            start = self.state.applied_index + 1
            if self._hints and self._apply_hint(start, top):
                continue
            stop = min(top, start + MAX_APPLY_BATCH - 1)
            if self._hints:  # stop where a hint starts, so that it lines up
                stop = self._hints.stop_before(start, stop)
            entries = []
            terms = []
            parsed: dict[int, Command] = {}
            proposals = self._proposals
            for index in range(start, stop + 1):
                term, payload = self.log.entry(index)
                terms.append(term)
                mine = proposals.get(index)
                if mine is not None and mine.term == term:
                    entries.append((index, mine.command))  # this very entry: see Proposal
                    if mine.parsed is not None:
                        parsed[index] = mine.parsed
                else:
                    entries.append((index, _command(payload)))
            outcome = self.state.apply_batch(
                entries, sync=False, parsed=parsed, hint_term=terms[-1] if leader else None
            )
            for (index, _), term, result in zip(entries, terms, outcome.results, strict=True):
                waiting = proposals.pop(index, None)
                if waiting is not None:
                    if waiting.term == term:
                        waiting.done(result)
                    else:
                        waiting.done(UnknownOutcome("the write was overwritten by a new leader"))
            if outcome.hint is not None:  # queued after the replies, for the next append
                self._send_hint(outcome.hint)
            self._on_events(outcome.events)
        if self._reads_waiting:
            applied = self.state.applied_index
            ready = [(i, d) for i, d in self._reads_waiting if i <= applied]
            if ready:
                self._reads_waiting = [(i, d) for i, d in self._reads_waiting if i > applied]
                for _, read_done in ready:
                    read_done(None)
        self._hints.forget(self.state.applied_index)
        self._maybe_compact()

    # -- apply hints (zdf.metastore.hints) -------------------------------------------------
    def _send_hint(self, hint: ApplyHint) -> None:
        """Queue ``hint`` for each follower: it goes with the next message to that
        follower, the append that tells it these entries are committed (``_send``)."""
        if self.transport is None:
            return
        body = hint.pack()
        if len(body) > MAX_CHUNK_BYTES:
            return  # a follower would refuse it: it runs these entries itself
        packed = frame(Applied(self.log.term, body))
        for peer in self.core.peers:
            queue = self._hints_out.setdefault(peer, [])
            queue.append(packed)
            if len(queue) > MAX_HINTS_QUEUED:  # a follower that gets no appends
                del queue[0]

    def _on_hint(self, msg: Applied) -> None:
        if not self.is_leader:
            self._hints.add(msg.hint, self.state.applied_index)

    def _apply_hint(self, start: int, top: int) -> bool:
        """Apply entries ``start..`` from a hint that lines up; False: run them instead."""
        hint = self._hints.take(start, top, self.log.term_at)
        if hint is None:
            return False
        events = self.state.apply_hint(hint, events=self._watching())
        if events is None:
            return False
        self.stats["hinted_entries"] += hint.last - hint.first + 1
        self._on_events(events)
        return True

    def _maybe_compact(self) -> None:
        keep = self.config.snapshot_entries
        applied = self.state.applied_index
        if applied - self.log.snap_index <= keep:
            return
        target = applied - keep // 4
        if self.is_leader and applied - self.log.snap_index <= 4 * keep:
            # Keep what a live follower still needs, so that it is not chased from one
            # snapshot to the next; a follower gone for long gets a snapshot anyway.
            now = time.monotonic()
            live = [
                p.match_index
                for p in self.core.peers.values()
                if now - p.last_ack < self.config.election_timeout
            ]
            if live:
                target = min(target, min(live))
        if target > self.log.snap_index:
            self.log.compact(target)

    # -- snapshots -----------------------------------------------------------------------------
    def _start_snapshot(self, name: str) -> None:
        old = self._senders.pop(name, None)
        if old is not None:
            old.close()
        sender = SnapshotSender(self.state.db, self.log.term_at)
        if not sender.valid:
            sender.close()
            self.core.snapshot_failed(name)
            return
        self._senders[name] = sender
        self.stats["snapshots_sent"] += 1
        log.info("metastore: sending a snapshot at index %d to %s", sender.index, name)
        self._send_chunk(name, sender)

    def _send_chunk(self, name: str, sender: SnapshotSender) -> None:
        offset, items, done = sender.next_chunk()
        msg = Snapshot(
            self.log.term,
            sender.index,
            sender.index_term,
            offset,
            tuple(items),
            done,
            self.core.snapshot_round(),
            self.config.public_addr,
        )
        self._send([(name, msg)])

    def _continue_snapshot(self, name: str, reply: SnapshotReply) -> None:
        sender = self._senders.get(name)
        if sender is None or reply.index != sender.index:
            return
        if reply.offset == sender.offset + len(sender.chunk) and not sender.done:
            self._send_chunk(name, sender)
        else:
            self._senders.pop(name).close()
            self.core.snapshot_failed(name)

    def _expire_senders(self) -> None:
        now = time.monotonic()
        for name, sender in list(self._senders.items()):
            if sender.done or now - sender.last_activity > SENDER_TIMEOUT:
                if sender.done and now - sender.last_activity <= SENDER_TIMEOUT:
                    continue
                self._senders.pop(name).close()
                self.core.snapshot_failed(name)

    def _on_snapshot_chunk(self, sender: str, msg: Snapshot, now: float) -> None:
        if not self.core.accept_leader(sender, msg.term, msg.leader_addr, now):
            self._reply_snapshot(sender, msg, 0, False)
            return
        if msg.index <= self.core.commit_index or msg.index <= self.state.applied_index:
            self._reply_snapshot(sender, msg, msg.offset + len(msg.items), True)
            return
        if msg.offset == 0:
            self._receiver = SnapshotReceiver(sender, msg.index, msg.index_term)
        receiver = self._receiver
        if (
            receiver is None
            or receiver.index != msg.index
            or not receiver.add(msg.offset, msg.items)
        ):
            self._reply_snapshot(sender, msg, 0, False)
            return
        if not msg.done:
            self._reply_snapshot(sender, msg, len(receiver.items), False)
            return
        self._receiver = None
        if self.log.dirty or self.log.unsynced:
            self.log.flush(sync=True)
        install(self.state.db, receiver)
        self.state.reload()
        self.core.snapshot_installed(receiver.index, receiver.index_term)
        self.stats["installed"] += 1
        log.info("metastore: installed a snapshot at index %d", receiver.index)
        proposals, self._proposals = self._proposals, {}
        for proposal in proposals.values():
            proposal.done(UnknownOutcome("replaced by a snapshot"))
        self._on_reset()
        self._reply_snapshot(sender, msg, len(receiver.items), True)

    def _reply_snapshot(self, to: str, msg: Snapshot, offset: int, done: bool) -> None:
        reply = SnapshotReply(self.log.term, msg.index, offset, done, msg.seq)
        self.core.out.outbox.append((to, reply))

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        core = self.core
        members = []
        for name, peer_addr in self.config.cluster.items():
            member: dict[str, Any] = {
                "name": name,
                "peer_addr": peer_addr,
                "addr": core.peer_addr(name) or None,
            }
            peer = core.peers.get(name)
            if self.is_leader and peer is not None:
                member["match_index"] = peer.match_index
            members.append(member)
        return {
            "role": core.role.value,
            "term": self.log.term,
            "leader": core.leader,
            "leader_addr": core.leader_addr or None,
            "commit_index": core.commit_index,
            "applied_index": self.state.applied_index,
            "last_index": self.log.last_index,
            "log_start": self.log.first_index,
            "members": members,
            "snapshots_sent": self.stats["snapshots_sent"],
            "snapshots_installed": self.stats["installed"],
            "hinted_entries": self.stats["hinted_entries"],
            "bad_hints": self._hints.bad,
            "peer_sent": 0 if self.transport is None else self.transport.stats["sent"],
            "peer_dropped": 0 if self.transport is None else self.transport.stats["dropped"],
            "peer_malformed": 0
            if self.transport is None
            else self.transport.stats["malformed"] + self.transport.stats["handler_errors"],
        }


def _command(payload: bytes) -> dict[str, Any]:
    try:
        command = unpackb(payload)
    except ProtocolError:
        return {"op": None}
    return command if isinstance(command, dict) else {"op": None}
