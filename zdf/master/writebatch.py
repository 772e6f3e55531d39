"""Framework writes of many requests in one fenced transaction per reactor turn.

A large job's tasks publish their endpoints and send their checkpoints in bursts
(a thousand producers start together). Written one by one, each a metastore round
trip on the master's only thread, such a burst blocks the loop for seconds: long
enough to lose the election lease. So a handler queues its write with a callback
and answers later (``DEFER``); the batch is written once the reactor has read what
was waiting, in transactions of at most ``MAX_OPS`` operations and ``MAX_TXN_BYTES``
(a key at most once in each: a second write of a key goes in the next one; a
write larger than that is split, in order, and its callback runs after its last
piece), for at most ``MAX_TURN_SECONDS`` a turn of the reactor, and every
callback learns how its write went. A submission's pieces therefore go out
between the lease's keepalives, never in one long block.

Each write may carry a ``check`` that runs just before its transaction is built
and raises (a ``JobError``) when the write has gone stale meanwhile (a newer
attempt of its task): it is then refused alone. ``LostLeadership`` stops the
batch: every write not yet applied is failed with ``NotLeader`` and ``on_lost``
steps the master down.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zdf.errors import NotLeader, ZdfError
from zdf.master.election import LostLeadership
from zdf.metastore.commands import MAX_TXN_OPS, TxnOp
from zdf.wire.reactor import Reactor, Timer

log = logging.getLogger(__name__)

MAX_OPS = MAX_TXN_OPS
"""Operations in a transaction (a larger write is split over several, in order)."""
MAX_TXN_BYTES = 2 << 20
"""Bytes of keys and values in a transaction: a bounded Raft entry."""
MAX_TURN_SECONDS = 0.05
"""Writing a turn of the reactor may take; the rest waits for the next turn."""

Done = Callable[[ZdfError | None], None]


@dataclass(eq=False)  # by identity: a write is queued once
class _Write:
    ops: Sequence[TxnOp]
    done: Done
    check: Callable[[], None] | None
    sent: int = 0  # ops of it already applied (a write larger than a transaction)


class FencedBatch:
    def __init__(
        self,
        reactor: Reactor,
        apply: Callable[[Sequence[TxnOp]], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.reactor = reactor
        self._apply = apply  # one fenced transaction (FrameworkStore.apply_fenced)
        self._on_lost = on_lost
        self._queue: deque[_Write] = deque()
        self._due: Timer | None = None
        self.transactions = 0

    def add(
        self, ops: Sequence[TxnOp], done: Done, check: Callable[[], None] | None = None
    ) -> None:
        self._queue.append(_Write(ops, done, check))
        self._wake()

    def _wake(self) -> None:
        if self._due is None:
            self._due = self.reactor.call_later(0, self._turn)

    def _turn(self) -> None:
        self._due = None
        self.flush(MAX_TURN_SECONDS)

    def flush(self, budget: float | None = None) -> None:
        """Write what is queued; with a ``budget`` (seconds), stop after it and go on
        at the next turn of the reactor, so that its timers (the election lease) and
        sockets are served between two pieces of a large write."""
        deadline = None if budget is None else time.monotonic() + budget
        while self._queue:
            if deadline is not None and time.monotonic() > deadline:
                self._wake()
                return
            if not self._one_transaction():
                return

    def _one_transaction(self) -> bool:
        """Gather and apply one transaction; False once leadership is lost."""
        parts: list[tuple[_Write, int]] = []  # write, ops of it in this transaction
        ops: list[TxnOp] = []
        keys: set[bytes] = set()
        size = 0
        while self._queue:
            write = self._queue[0]
            if write.sent == 0 and write.check is not None:
                try:
                    write.check()
                except ZdfError as exc:
                    self._queue.popleft()
                    write.done(exc)
                    continue
            taken = 0
            for op in write.ops[write.sent :]:
                key = _key(op)
                cost = len(key) + len(getattr(op, "value", b""))
                full = len(ops) >= MAX_OPS or (ops and size + cost > MAX_TXN_BYTES)
                if full or key in keys:
                    break
                ops.append(op)
                keys.add(key)
                size += cost
                taken += 1
            if taken:
                parts.append((write, taken))
            if write.sent + taken < len(write.ops):
                break  # the rest of it goes in the next transaction
            self._queue.popleft()
        if not ops:
            for write, _ in parts:  # writes of no operations
                write.done(None)
            return True
        try:
            self._apply(ops)
            self.transactions += 1
        except LostLeadership as exc:
            pending = dict.fromkeys([*(w for w, _ in parts), *self._queue])
            self._queue.clear()
            for write in pending:
                write.done(NotLeader("the master lost its leadership", leader=None))
            self._on_lost(str(exc))
            return False
        except ZdfError as exc:
            log.warning("a batch of %d framework writes failed: %s", len(parts), exc)
            for write, _ in parts:
                write.done(exc)
                if self._queue and self._queue[0] is write:
                    self._queue.popleft()  # the rest of a failed write is dropped
            return True
        for write, taken in parts:
            write.sent += taken
            if write.sent == len(write.ops):
                write.done(None)
        return True


def _key(op: TxnOp) -> bytes:
    key = getattr(op, "key", b"")
    return key if isinstance(key, bytes) else b""
