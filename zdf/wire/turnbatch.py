"""Messages of one reactor turn, gathered per destination and sent as one.

Theory of operation: a process that answers a burst (a thousand tasks starting
on one worker, each reporting ``running`` and publishing a port) would send one
small message per item; each costs an encode, a send that wakes the peer's I/O
thread, a receive and a decode on the other side, and on two shared cores the
wake-ups cost more than the work. ``TurnBatch.add(key, item)`` keeps the item
instead; the first item of a turn schedules ``flush`` for the start of the next
turn of the reactor (``call_later(0)``: after every socket that was readable in
this turn has been read), which hands each key's items, in the order they were
added, to ``send`` in lists of at most ``limit`` (a bounded message whatever the
burst). Messages then scale with destinations per turn, not with items.

A flush can also be asked for at once (before a message that must not overtake
the items, or at shutdown); ``clear`` forgets what is waiting (a peer that is gone).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from zdf.wire.reactor import Reactor, Timer

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_LIMIT = 512
"""Items in one message at most."""


class TurnBatch(Generic[K, V]):
    def __init__(
        self,
        reactor: Reactor,
        send: Callable[[K, list[V]], None],
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        if limit < 1:
            raise ValueError("a batch holds at least one item")
        self.reactor = reactor
        self._send = send
        self.limit = limit
        self._items: dict[K, list[V]] = {}
        self._due: Timer | None = None
        self.messages = 0  # sent, for tests and figures

    def add(self, key: K, item: V) -> None:
        if self._due is None:
            self._due = self.reactor.call_later(0.0, self.flush)
        self._items.setdefault(key, []).append(item)

    def __len__(self) -> int:
        return sum(map(len, self._items.values()))

    def flush(self) -> None:
        """Send everything waiting now, key by key, in order."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        items, self._items = self._items, {}
        for key, batch in items.items():
            for start in range(0, len(batch), self.limit):
                self.messages += 1
                self._send(key, batch[start : start + self.limit])

    def clear(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        self._items.clear()
