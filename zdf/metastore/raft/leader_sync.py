"""When a leader syncs its own log: only when its followers do not commit without it.

Theory of operation. An entry is committed once a majority holds it durably,
and in a cluster of three or five the followers alone are a majority. So a
leader may send new entries at once, write them to its own log *without*
syncing, and let its followers' synced acknowledgements commit them (Raft
thesis, 10.2.1); the leader counts itself towards a commit only up to what it
has synced (``RaftLog.persisted_index``). Unsynced entries are still written
to LevelDB, so the state machine may apply them once committed (LevelDB keeps
writes in order: no state change outlives, in a crash, the entries it came from).

``LeaderSync`` tells the replica when a leader must sync after all:

- when nothing else is waiting for it (no request, no peer message to read):
  it would only wait for its followers' acknowledgements, so it syncs while
  they travel, and then the first acknowledgement commits. Under load there
  is always more to read, and the leader leaves the fsyncs to its followers;
- when its live followers cannot make a quorum by themselves (one replica; a
  follower down, cut off or being sent a snapshot);
- when an entry it wrote has waited ``delay`` without being committed (a slow
  follower: the leader's own vote is needed);
- on every tick anyway (the replica asks with ``force``), so that its log is
  never far from durable and compaction, which drops synced entries only,
  goes on.

What it saves under load: the leader's fsync per group commit (CPU, and a
journal commit the followers' fsyncs would queue behind), and the time the
leader's loop would block in it instead of reading the next requests. Whatever is not yet
synced is synced before the replica answers anything once it is no longer
leader (it then follows the ordinary path: every flush synced).
"""

from __future__ import annotations

from collections import deque

from zdf.metastore.raft.core import RaftCore

LEADER_SYNC_DELAY = 0.002
"""How long a written entry may wait for its followers to commit it before the
leader syncs it itself. Well above a follower's fsync and round trip on loopback
or a LAN, well below anything a client would notice as a stall."""


class LeaderSync:
    def __init__(self, delay: float = LEADER_SYNC_DELAY) -> None:
        self.delay = delay
        self.force = False
        """Set by the replica's tick: the next flush syncs."""
        self._waiting: deque[tuple[int, float]] = deque()  # (last index written, when)

    def may_defer(self, core: RaftCore, now: float, busy: bool = True) -> bool:
        """Whether the leader may leave what it writes now unsynced (``busy``: input waits)."""
        if not busy or self.force or self.overdue(core.commit_index, now):
            return False
        liveness = 2 * core.timing.heartbeat_interval
        live = 0
        for peer in core.peers.values():
            if not peer.snapshotting and now - peer.last_ack < liveness:
                live += 1
        return live >= core.quorum

    def written(self, index: int, now: float) -> None:
        """Entries up to ``index`` were written unsynced at ``now``."""
        self._waiting.append((index, now))

    def overdue(self, commit_index: int, now: float) -> bool:
        """Whether an unsynced entry has waited too long for its commit."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= commit_index:
            waiting.popleft()
        return bool(waiting) and now - waiting[0][1] >= self.delay

    def next_check(self) -> float | None:
        """When the oldest entry still waiting becomes overdue (None: nothing waits)."""
        return self._waiting[0][1] + self.delay if self._waiting else None

    def synced(self) -> None:
        self._waiting.clear()
        self.force = False
