"""Many calls to one peer in one message: ``batch``.

Theory of operation: the reports of a thousand tasks (``task_state``, ``progress``,
``publish_endpoint``) went one message each, worker -> executor -> master, so a
large job's messages grew with its tasks. A ``CallBatcher`` keeps the calls a
process makes to a peer during one reactor turn (``zdf.wire.turnbatch``) and sends
them as one ``batch`` message::

    {"calls": [[op, body], ...]}          ->   {"results": [[ok, value], ...]}

in their order. The receiver (``serve_batch``, installed as a channel's handler
for ``batch``) serves each call exactly as if it had come alone: the same handler
table, the same gate and role checks (with the batch's role), the same handlers
that answer at once or later (``DEFER``). Once every call has answered, one reply
carries the results in order: ``[True, result]`` or ``[False, error]`` (an error
as ``wire_error`` makes it). A batch of events only (no call wants an answer) is
sent as an event and answered by nobody.

So each call keeps its own outcome (a stale report refused, a publication
recorded) while the messages scale with peers per turn. A batch that cannot be
read as a whole (not a list of ``[op, body]`` pairs, too long, a batch in a batch)
is refused before any of its calls is served. A batch request that fails as a
whole (no answer in time, not sent) fails every call in it with that error, so
each sender's own retry rule applies unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from zdf.errors import ProtocolError, ZdfError, from_wire
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import DEFER, Call, Channel, ReplyCallback, wire_error
from zdf.wire.turnbatch import TurnBatch

BATCH = "batch"
MAX_CALLS = 1024
"""Calls one batch may carry (a sender sends at most ``SEND_LIMIT``)."""
SEND_LIMIT = 512


@dataclass(slots=True)
class BatchedCall(Call):
    """A call that came in a batch: its answer goes into the batch's reply."""

    answer: Callable[[bool, Any], None] | None = None

    def reply(self, result: Any = None, frames: Any = ()) -> None:
        if self.is_event or self.answered:
            return
        self.answered = True
        if self.answer is not None:
            self.answer(True, result)

    def fail(self, error: BaseException) -> None:
        if self.is_event or self.answered:
            return
        self.answered = True
        if self.answer is not None:
            self.answer(False, wire_error(error))


def serve_batch(call: Call) -> Any:
    """The handler of ``batch`` (see the module docstring)."""
    entries = call.body.get("calls") if isinstance(call.body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ProtocolError("a batch needs a non-empty list 'calls'")
    if len(entries) > MAX_CALLS:
        raise ProtocolError(f"a batch carries at most {MAX_CALLS} calls, not {len(entries)}")
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ProtocolError("a batch's calls are [op, body] pairs")
        if entry[0] == BATCH:
            raise ProtocolError("a batch may not carry a batch")
    results: list[Any] = [None] * len(entries)
    left = [len(entries)]

    def answered(index: int, ok: bool, value: Any) -> None:
        results[index] = [ok, value]
        left[0] -= 1
        if left[0] == 0:
            call.reply({"results": results})

    for index, (op, body) in enumerate(entries):
        sub = BatchedCall(call.channel, call.peer, op, 0, body, [], call.is_event)
        sub.role = call.role
        if not call.is_event:
            sub.answer = lambda ok, value, i=index: answered(i, ok, value)
        call.channel.serve(sub)
    return DEFER


@dataclass(slots=True)
class _Item:
    op: str
    body: Any
    timeout: float | None
    callback: ReplyCallback | None


class CallBatcher:
    """Calls to peers, sent once per turn as ``batch`` messages (module docstring).

    ``channel`` is asked for at each send: a process that replaces its connection
    (another master) sends what waits on the new one."""

    def __init__(
        self, reactor: Reactor, channel: Callable[[], Channel], limit: int = SEND_LIMIT
    ) -> None:
        self._channel = channel
        self._batch: TurnBatch[Hashable, _Item] = TurnBatch(reactor, self._send, limit)

    def notify(self, op: str, body: Any, *, peer: bytes | None = None) -> None:
        self._batch.add(peer, _Item(op, body, None, None))

    def request(
        self,
        op: str,
        body: Any,
        *,
        peer: bytes | None = None,
        timeout: float,
        callback: ReplyCallback,
    ) -> None:
        self._batch.add(peer, _Item(op, body, timeout, callback))

    def flush(self) -> None:
        self._batch.flush()

    def clear(self) -> None:
        self._batch.clear()

    @property
    def messages(self) -> int:
        return self._batch.messages

    def _send(self, peer: Hashable, items: list[_Item]) -> None:
        channel = self._channel()
        target = peer if isinstance(peer, bytes) else None
        if len(items) == 1:  # alone: as it always went
            item = items[0]
            if item.callback is None:
                channel.notify(item.op, item.body, peer=target)
            else:
                channel.request(
                    item.op, item.body, peer=target, timeout=item.timeout, callback=item.callback
                )
            return
        body = {"calls": [[item.op, item.body] for item in items]}
        waiting = [item for item in items if item.callback is not None]
        if not waiting:
            channel.notify(BATCH, body, peer=target)
            return
        timeout = min(item.timeout for item in waiting if item.timeout is not None)

        def answered(result: Any, error: ZdfError | None) -> None:
            results = result.get("results") if isinstance(result, dict) else None
            if error is None and not (isinstance(results, list) and len(results) == len(items)):
                error = ProtocolError("a batch's answer does not match its calls")
            for index, item in enumerate(items):
                if item.callback is None:
                    continue
                if error is not None:
                    item.callback(None, error)
                    continue
                assert results is not None
                outcome = results[index]
                if isinstance(outcome, list) and len(outcome) == 2 and outcome[0] is True:
                    item.callback(outcome[1], None)
                else:
                    wire = outcome[1] if isinstance(outcome, list) and len(outcome) == 2 else None
                    item.callback(None, from_wire(wire))

        channel.request(BATCH, body, peer=target, timeout=timeout, callback=answered)
