"""Framework writes of many requests in one fenced transaction per reactor turn.

A large job's tasks publish their endpoints and send their checkpoints in bursts
(a thousand producers start together). Written one by one, each a metastore round
trip on the master's only thread, such a burst blocks the loop for seconds: long
enough to lose the election lease. So a handler queues its write with a callback
and answers later (``DEFER``); the batch is written once the reactor has read what
was waiting, in transactions of at most ``MAX_OPS`` operations (a key at most
once in each: a second write of a key goes in the next one), and every callback
learns how its write went.

Each write may carry a ``check`` that runs just before its transaction is built
and raises (a ``JobError``) when the write has gone stale meanwhile (a newer
attempt of its task): it is then refused alone. ``LostLeadership`` stops the
batch: every write not yet applied is failed with ``NotLeader`` and ``on_lost``
steps the master down.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zdf.errors import NotLeader, ZdfError
from zdf.master.election import LostLeadership
from zdf.metastore.commands import MAX_TXN_OPS, TxnOp
from zdf.wire.reactor import Reactor, Timer

log = logging.getLogger(__name__)

MAX_OPS = MAX_TXN_OPS
"""Operations a transaction gathers from several writes (one write larger than
this is split by ``FrameworkStore.apply_fenced``)."""

Done = Callable[[ZdfError | None], None]


@dataclass
class _Write:
    ops: Sequence[TxnOp]
    done: Done
    check: Callable[[], None] | None


class FencedBatch:
    def __init__(
        self,
        reactor: Reactor,
        apply: Callable[[Sequence[TxnOp]], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.reactor = reactor
        self._apply = apply  # a fenced transaction (FrameworkStore.apply_fenced)
        self._on_lost = on_lost
        self._queue: list[_Write] = []
        self._due: Timer | None = None
        self.transactions = 0

    def add(
        self, ops: Sequence[TxnOp], done: Done, check: Callable[[], None] | None = None
    ) -> None:
        self._queue.append(_Write(ops, done, check))
        if self._due is None:
            self._due = self.reactor.call_later(0, self.flush)

    def flush(self) -> None:
        self._due = None
        queue, self._queue = deque(self._queue), []
        while queue:
            batch: list[_Write] = []
            ops: list[TxnOp] = []
            keys: set[bytes] = set()
            while queue and (not batch or self._fits(queue[0], ops, keys)):
                write = queue.popleft()
                if write.check is not None:
                    try:
                        write.check()
                    except ZdfError as exc:
                        write.done(exc)
                        continue
                batch.append(write)
                ops.extend(write.ops)
                keys.update(_keys(write.ops))
            if not batch:
                continue
            try:
                self._apply(ops)
                self.transactions += 1
            except LostLeadership as exc:
                for write in [*batch, *queue]:
                    write.done(NotLeader("the master lost its leadership", leader=None))
                self._on_lost(str(exc))
                return
            except ZdfError as exc:
                log.warning("a batch of %d framework writes failed: %s", len(batch), exc)
                for write in batch:
                    write.done(exc)
                continue
            for write in batch:
                write.done(None)

    @staticmethod
    def _fits(write: _Write, ops: list[TxnOp], keys: set[bytes]) -> bool:
        """Room for ``write`` in this transaction, which must not put a key twice."""
        return len(ops) + len(write.ops) <= MAX_OPS and keys.isdisjoint(_keys(write.ops))


def _keys(ops: Sequence[TxnOp]) -> list[bytes]:
    return [key for op in ops if isinstance(key := getattr(op, "key", None), bytes)]
