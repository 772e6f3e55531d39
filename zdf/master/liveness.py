"""Executor liveness: alive -> suspect -> dead.

Theory of operation (the Paranoid Pirate rule, with socket events on top):
any traffic from an executor — a heartbeat on PUB/SUB or any request on the
ROUTER — counts as a heartbeat. Silence for ``suspect_after`` (three heartbeat
intervals) makes it suspect; silence for ``ttl`` makes it dead. Socket events
are faster than silence: when the master's SUB connection to an executor drops,
the executor is suspect at once, and when the reconnect is refused (nobody
listens at that address any more: the process is gone) it is dead at once.
A dead executor stays dead; it must register again.

Silence is only evidence while the master was listening. When the master's own
loop stalls (a slow metastore call during a metastore election, a GC pause, a
SIGSTOP), the heartbeats that arrived meanwhile still sit unread in its sockets;
judging by the clock alone would declare every executor dead and move every
task. So ``tick`` measures its own cadence and forgives the deaf time: a gap
between two ticks longer than ``max_tick_gap`` shifts every peer's last-seen
time forward by the excess.
"""

from __future__ import annotations

from dataclasses import dataclass

from zdf.master.states import EXECUTOR_TRANSITIONS, GONE_EXECUTOR_STATES, ExecutorState


@dataclass
class _Peer:
    state: ExecutorState
    last_seen: float
    disconnected: bool = False


Transition = tuple[str, ExecutorState, ExecutorState]


class ExecutorLiveness:
    def __init__(self, interval: float, ttl: float) -> None:
        self.interval = interval
        self.ttl = ttl
        self.suspect_after = min(interval * 3, ttl * 0.75)
        self.max_tick_gap = interval
        """A longer gap between ticks means the master itself was not listening."""
        self.forgiven = 0.0
        """Total deaf time forgiven so far (seconds), for the logs and the tests."""
        self._peers: dict[str, _Peer] = {}
        self._last_tick: float | None = None

    def add(self, executor_id: str, now: float) -> None:
        self._peers[executor_id] = _Peer(ExecutorState.ALIVE, now)

    def state(self, executor_id: str) -> ExecutorState | None:
        peer = self._peers.get(executor_id)
        return None if peer is None else peer.state

    def last_seen(self, executor_id: str) -> float | None:
        peer = self._peers.get(executor_id)
        return None if peer is None else peer.last_seen

    def seen(self, executor_id: str, now: float) -> Transition | None:
        peer = self._peers.get(executor_id)
        if peer is None:
            return None
        peer.last_seen = now
        peer.disconnected = False
        return self._move(executor_id, peer, ExecutorState.ALIVE)

    def disconnected(self, executor_id: str) -> Transition | None:
        peer = self._peers.get(executor_id)
        if peer is None:
            return None
        peer.disconnected = True
        return self._move(executor_id, peer, ExecutorState.SUSPECT)

    def refused(self, executor_id: str) -> Transition | None:
        """The reconnect after a disconnect failed: the process is gone."""
        peer = self._peers.get(executor_id)
        if peer is None or not peer.disconnected:
            return None
        return self._move(executor_id, peer, ExecutorState.DEAD)

    def left(self, executor_id: str) -> Transition | None:
        """It deregistered: a graceful shutdown, its tasks can move at once."""
        peer = self._peers.get(executor_id)
        return None if peer is None else self._move(executor_id, peer, ExecutorState.LEFT)

    def tick(self, now: float) -> list[Transition]:
        """Judge every peer's silence; call it about every ``interval / 2``."""
        if self._last_tick is not None and now - self._last_tick > self.max_tick_gap:
            deaf = now - self._last_tick - self.max_tick_gap
            self.forgiven += deaf
            for peer in self._peers.values():
                peer.last_seen = min(now, peer.last_seen + deaf)
        self._last_tick = now
        moves: list[Transition] = []
        for executor_id, peer in self._peers.items():
            silent = now - peer.last_seen
            target = None
            if silent >= self.ttl:
                target = ExecutorState.DEAD
            elif silent >= self.suspect_after:
                target = ExecutorState.SUSPECT
            if target is not None:
                move = self._move(executor_id, peer, target)
                if move is not None:
                    moves.append(move)
        return moves

    def next_due(self) -> float | None:
        """When the next peer's silence reaches a threshold, if it stays silent.

        Ticks come every ``interval / 2``; a check at this moment too makes a
        silent executor dead at ``ttl`` of silence, not up to a tick later."""
        due = [
            peer.last_seen + (self.suspect_after if peer.state is ExecutorState.ALIVE else self.ttl)
            for peer in self._peers.values()
            if peer.state not in GONE_EXECUTOR_STATES
        ]
        return min(due) if due else None

    @staticmethod
    def _move(executor_id: str, peer: _Peer, target: ExecutorState) -> Transition | None:
        if peer.state == target or target not in EXECUTOR_TRANSITIONS[peer.state]:
            return None
        old, peer.state = peer.state, target
        return executor_id, old, target
