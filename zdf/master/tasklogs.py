"""``task_logs``: a job's task output, gathered by the master from every live executor.

Theory of operation: the output of a task attempt stays on the executor that ran
it (``zdf.observe.taskout``). A client asks the master; the master asks every
executor it knows to be alive for the files of that job (or task, or attempt)
from the client's offsets, and answers once each executor has answered or its
request has timed out (the answer names those that did not). The master keeps
nothing: ``zdf logs --follow`` asks again with the offsets it has reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zdf import protocol as P
from zdf.errors import ZdfError
from zdf.wire.rpc import DEFER, Call, Channel

MAX_CHUNK = 256 * 1024
"""Bytes of one file an answer carries at most (a follower asks again for the rest)."""
EXECUTOR_TIMEOUT = 3.0


class TaskLogRelay:
    def __init__(self, channel: Channel, alive_peers: Callable[[], dict[str, bytes]]) -> None:
        self.channel = channel
        self.alive_peers = alive_peers  # executor id -> its peer identity on the channel

    def on_task_logs(self, call: Call) -> Any:
        body = P.fields(call.body, job_id=str)
        request = {
            "job_id": body["job_id"],
            "task_id": body.get("task_id") if isinstance(body.get("task_id"), str) else None,
            "attempt": body.get("attempt") if isinstance(body.get("attempt"), int) else None,
            "offsets": body.get("offsets") if isinstance(body.get("offsets"), dict) else {},
            "limit": min(MAX_CHUNK, int(body.get("limit") or MAX_CHUNK)),
        }
        peers = self.alive_peers()
        if not peers:
            return {"files": [], "missing": []}
        files: list[dict[str, Any]] = []
        missing: list[str] = []
        waiting = set(peers)

        def answered(executor_id: str) -> Callable[[Any, ZdfError | None], None]:
            def done(result: Any, error: ZdfError | None) -> None:
                waiting.discard(executor_id)
                if error is not None or not isinstance(result, list):
                    missing.append(executor_id)
                else:
                    files.extend({**entry, "executor": executor_id} for entry in result)
                if not waiting:
                    files.sort(key=lambda f: (str(f.get("task")), int(f.get("attempt", 0))))
                    call.reply({"files": files, "missing": sorted(missing)})

            return done

        for executor_id, peer in peers.items():
            self.channel.request(
                P.TASK_LOGS,
                request,
                peer=peer,
                timeout=EXECUTOR_TIMEOUT,
                callback=answered(executor_id),
            )
        return DEFER
