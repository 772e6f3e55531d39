"""Server side of watches: who watches what, and getting events to them.

Theory of operation: a watch is (peer, watch id, key prefix, next revision).
It is *synced* when everything before ``next_revision`` has been sent; then
the events of each new commit go straight from memory. It is *lagging* when it
starts in the past or when its peer's send queue was full: it then catches up
from the history kept in LevelDB, one chunk at a time, on a timer, until it is
synced again (the pattern of etcd's unsynced watchers). Nothing is ever
dropped silently, so ZeroMQ's high-water mark is back-pressure, not loss.

Every message to a watcher is ``watch_event`` with ``{"watch_id", "seq",
"events", "revision"}``: the watcher has seen everything up to ``revision``
once it has this message; ``seq`` counts messages so that a lost one shows as
a gap. A periodic message with no events is the heartbeat that tells the
client the server and the watch are still alive; when the peer is gone
(``EHOSTUNREACH`` on a ``ROUTER_MANDATORY`` socket) the watch is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import zmq

from zdf.errors import CompactedError, ZdfError
from zdf.metastore.kv import Event
from zdf.metastore.state import MetaState
from zdf.wire.codec import Kind, encode

log = logging.getLogger(__name__)

MAX_EVENTS_PER_MESSAGE = 1000
CATCH_UP_CHUNKS_PER_TICK = 16


@dataclass(slots=True)
class ServerWatch:
    peer: bytes
    watch_id: int
    prefix: bytes
    next_revision: int
    seq: int = 0
    lagging: bool = False


class WatchHub:
    def __init__(self, sock: zmq.Socket[bytes], state: MetaState, *, max_watches: int) -> None:
        self.sock = sock
        self.state = state
        self.max_watches = max_watches
        self.watches: dict[tuple[bytes, int], ServerWatch] = {}
        self.sent_messages = 0
        self.lagged = 0
        """How often a watcher's queue was full and it fell back to history."""

    def __len__(self) -> int:
        return len(self.watches)

    def add(self, peer: bytes, watch_id: int, prefix: bytes, start_revision: int) -> ServerWatch:
        """Register a watch; ``start_revision`` 0 means 'from the next change'."""
        if (peer, watch_id) not in self.watches and len(self.watches) >= self.max_watches:
            raise ZdfError(f"too many watches (limit {self.max_watches})")
        current = self.state.revision
        if start_revision and start_revision < self.state.compact_revision:
            raise CompactedError(
                f"revision {start_revision} has been compacted (history starts at "
                f"{self.state.compact_revision})",
                compact_revision=self.state.compact_revision,
            )
        start = start_revision or current + 1
        watch = ServerWatch(peer, watch_id, prefix, start, lagging=start <= current)
        self.watches[(peer, watch_id)] = watch
        return watch

    def resync_all(self) -> None:
        """The state was replaced (a snapshot): every watch catches up from history."""
        for watch in self.watches.values():
            watch.lagging = True

    def cancel(self, peer: bytes, watch_id: int) -> bool:
        return self.watches.pop((peer, watch_id), None) is not None

    # -- delivery --------------------------------------------------------------------
    def publish(self, events: list[Event]) -> None:
        """Send the events of a fresh commit to every synced watch."""
        if not events:
            return
        last = events[-1].revision
        for watch in list(self.watches.values()):
            if watch.lagging or watch.next_revision > last:
                continue
            mine = [
                e
                for e in events
                if e.revision >= watch.next_revision and e.key.startswith(watch.prefix)
            ]
            if not mine or self._send_chunked(watch, mine, last):
                watch.next_revision = last + 1
            elif (watch.peer, watch.watch_id) in self.watches:
                watch.lagging = True

    def catch_up_all(self) -> None:
        for watch in list(self.watches.values()):
            if watch.lagging:
                self.catch_up(watch)

    def catch_up(self, watch: ServerWatch) -> None:
        """Send history from ``next_revision`` until synced, the queue fills, or the tick ends."""
        for _ in range(CATCH_UP_CHUNKS_PER_TICK):
            if watch.next_revision > self.state.revision:
                watch.lagging = False
                return
            try:
                chunk = self.state.history(
                    watch.next_revision, watch.prefix, max_events=MAX_EVENTS_PER_MESSAGE
                )
            except CompactedError as exc:
                self._send_cancel(watch, exc)
                return
            if chunk.events and not self._send(watch, chunk.events, chunk.next_revision - 1):
                return
            watch.next_revision = chunk.next_revision

    def progress(self) -> None:
        """Heartbeat every synced watch (and find out which peers are gone)."""
        for watch in list(self.watches.values()):
            if not watch.lagging:
                self._send(watch, [], watch.next_revision - 1)

    # -- sending ---------------------------------------------------------------------
    def _send_chunked(self, watch: ServerWatch, events: list[Event], revision: int) -> bool:
        # Split only between revisions, so a resumed watch never sees half a revision.
        start = 0
        while start < len(events):
            end = min(start + MAX_EVENTS_PER_MESSAGE, len(events))
            while end < len(events) and events[end].revision == events[end - 1].revision:
                end += 1
            through = revision if end == len(events) else events[end].revision - 1
            if not self._send(watch, events[start:end], through):
                if start:  # part was sent: resume from history after it
                    watch.next_revision = events[start].revision
                return False
            start = end
        return True

    def _send(self, watch: ServerWatch, events: list[Event], revision: int) -> bool:
        body: dict[str, Any] = {
            "watch_id": watch.watch_id,
            "seq": watch.seq + 1,
            "events": [e.to_wire() for e in events],
            "revision": revision,
        }
        frame = encode(Kind.EVENT, "watch_event", 0, body)
        try:
            self.sock.send_multipart([watch.peer, frame], zmq.NOBLOCK)
        except zmq.Again:
            if not watch.lagging:
                self.lagged += 1
            watch.lagging = True
            return False
        except zmq.ZMQError as exc:
            log.debug("watch %s: peer gone (%s), dropping it", watch.watch_id, exc)
            self.watches.pop((watch.peer, watch.watch_id), None)
            return False
        watch.seq += 1
        self.sent_messages += 1
        return True

    def _send_cancel(self, watch: ServerWatch, error: ZdfError) -> None:
        self.watches.pop((watch.peer, watch.watch_id), None)
        body = {"watch_id": watch.watch_id, "error": error.to_wire()}
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart(
                [watch.peer, encode(Kind.EVENT, "watch_canceled", 0, body)], zmq.NOBLOCK
            )
