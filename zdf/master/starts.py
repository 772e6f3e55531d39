"""Start commands: a placement round's starts, one message per executor.

Theory of operation: once a round of placements is durable (write-ahead, in
``Master._schedule``), its tasks are started. Sent one message per task, a
1,000-table job cost a thousand requests and replies through the master, each
an encode, a send and a wake-up on both sides. ``StartSender.send`` groups the
round's ``Dispatch``es by executor and sends each executor one ``start_tasks``
request (at most ``MAX_STARTS`` starts each; a larger round's messages go one a turn
of the reactor, so that encoding them never holds the loop -- and the election
lease's keepalive -- for long)::

    {"epoch": E, "endpoints": {job_id: [[task, name, addr], ...]},
     "starts": [{"job_id", "task", "attempt", "checkpoint"}, ...]}

carrying each job's known endpoints once, not once per task. The executor reads
the whole message before it starts any task and refuses it whole when it is
malformed or comes from a master of another epoch than the one it registered
with (a deposed master: fenced), so a start command is applied all or nothing;
it answers ``{"results": [...]}``, one per start in order: where the task went,
or the error that refused that one task (no worker has room for it), which fails
that task as a refused single start did.

A message that could not be sent (the executor's queue is full, or it is gone:
``unsent``) is sent again after ``RETRY`` with the starts that still stand (the
same attempt, still placed there); no answer in time is left to liveness (the
executor is slow or dead); a refusal of the whole message fails each of its
tasks (each is retried by the job's rules).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from zdf import protocol as P
from zdf.errors import Timeout, ZdfError
from zdf.master.jobs import Dispatch
from zdf.observe.logs import task_fields
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import Channel

log = logging.getLogger(__name__)

MAX_STARTS = 256
"""Starts in one message at most (a bounded message, and a bounded turn to encode it)."""
RETRY = 0.2
"""Seconds before starts that could not be sent are sent again."""


class StartSender:
    def __init__(
        self,
        reactor: Reactor,
        channel: Channel,
        *,
        peer_of: Callable[[str], bytes | None],
        epoch: Callable[[], int],
        endpoints_of: Callable[[str], list[list[str]]],
        checkpoint_of: Callable[[str, str], bytes | None],
        standing: Callable[[Dispatch], bool],
        refused: Callable[[Dispatch, ZdfError], None],
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.channel = channel
        self._peer_of = peer_of
        self._epoch = epoch
        self._endpoints_of = endpoints_of
        self._checkpoint_of = checkpoint_of
        self._standing = standing
        self._refused = refused
        self.timeout = timeout
        self.messages = 0
        self._waiting: deque[tuple[str, list[Dispatch]]] = deque()  # messages of later turns
        self._due: Timer | None = None

    def send(self, dispatches: list[Dispatch]) -> None:
        """Start ``dispatches``: one message per executor (per ``MAX_STARTS``), the first
        of each executor now, the rest one a turn."""
        by_executor: dict[str, list[Dispatch]] = {}
        for d in dispatches:
            by_executor.setdefault(d.executor_id, []).append(d)
        for executor_id, starts in by_executor.items():
            for i in range(0, len(starts), MAX_STARTS):
                chunk = starts[i : i + MAX_STARTS]
                if i == 0:
                    self._send(executor_id, chunk)
                else:
                    self._waiting.append((executor_id, chunk))
        if self._waiting and self._due is None:
            self._due = self.reactor.call_later(0.0, self._send_next)

    def _send_next(self) -> None:
        self._due = None
        if not self._waiting:
            return
        executor_id, chunk = self._waiting.popleft()
        standing = [d for d in chunk if self._standing(d)]  # moved meanwhile: not sent
        if standing:
            self._send(executor_id, standing)
        if self._waiting:
            self._due = self.reactor.call_later(0.0, self._send_next)

    def body(self, starts: list[Dispatch]) -> dict[str, Any]:
        jobs = dict.fromkeys(d.job_id for d in starts)
        return {
            "epoch": self._epoch(),
            "endpoints": {job_id: self._endpoints_of(job_id) for job_id in jobs},
            "starts": [
                {
                    "job_id": d.job_id,
                    "task": d.spec.to_dict(),
                    "attempt": d.attempt,
                    "checkpoint": self._checkpoint_of(d.job_id, d.spec.task_id),
                }
                for d in starts
            ],
        }

    def _send(self, executor_id: str, starts: list[Dispatch]) -> None:
        peer = self._peer_of(executor_id)
        if peer is None:
            return  # gone: liveness moves its tasks

        def answered(result: Any, error: ZdfError | None) -> None:
            if error is not None and error.data.get("unsent"):
                self.reactor.call_later(RETRY, lambda: self._resend(executor_id, starts))
            elif isinstance(error, Timeout):
                return  # slow or gone: liveness decides
            elif error is not None:
                for d in starts:
                    self._refuse(d, error)
            else:
                self._results(starts, result)

        self.messages += 1
        self.channel.request(
            P.START_TASKS, self.body(starts), peer=peer, timeout=self.timeout, callback=answered
        )

    def _results(self, starts: list[Dispatch], result: Any) -> None:
        results = result.get("results") if isinstance(result, dict) else None
        if not isinstance(results, list) or len(results) != len(starts):
            log.warning("an executor answered %d starts with %r", len(starts), result)
            return
        for d, outcome in zip(starts, results, strict=True):
            if isinstance(outcome, dict) and isinstance(outcome.get("error"), str):
                self._refuse(d, ZdfError(outcome["error"]))

    def _refuse(self, d: Dispatch, error: ZdfError) -> None:
        log.warning(
            "start of %s/%s failed: %s",
            d.job_id,
            d.spec.task_id,
            error,
            extra=task_fields(d.job_id, d.spec.task_id, d.attempt),
        )
        self._refused(d, error)

    def _resend(self, executor_id: str, starts: list[Dispatch]) -> None:
        """Send again the starts that could not be sent, those that still stand."""
        standing = [d for d in starts if self._standing(d)]
        if not standing:
            return
        self.channel.stats["start_resent"] += len(standing)
        log.warning("%d starts resent to %s", len(standing), executor_id)
        self._send(executor_id, standing)
