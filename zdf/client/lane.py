"""A client's lease on one worker: its lone tasks go there past the master.

See ``zdf.master.fnleases`` for how leases are granted and end. The lane is a
DEALER to the worker's ``direct`` ROUTER; results come back on the client's
result socket as for any task. It remembers which tasks it carried, so that
they can be sent again through the master when the lease ends. Results the
client released ride, as store keys to drop, on the next task it sends
(``drop``); those waiting too long are handed back (``stale_drops``) to go
through the master.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import zmq

from zdf import protocol as P
from zdf.wire.bigmsg import BigSender, is_big
from zdf.wire.codec import Kind, encode
from zdf.wire.sockets import close_socket, make_socket

# tid, function, retries, frames, options (``client.options``: priority, resources, name)
Outgoing = tuple[int, str, int, list[Any], dict[str, Any]]


def task_message(op: str, batch: list[Outgoing], body: dict[str, Any]) -> list[Any]:
    """``op`` (``fn_submit`` or ``fn_direct``) carrying ``batch``: ``body`` plus the
    ``tasks`` header, then every task's frames."""
    header: list[list[Any]] = []
    frames: list[Any] = []
    for tid, path, retries, task_frames, options in batch:
        entry: list[Any] = [tid, path, retries, len(task_frames)]
        if options:
            entry.append(options)
        header.append(entry)
        frames.extend(task_frames)
    return [encode(Kind.EVENT, op, 0, {**body, "tasks": header}), *frames]


class DirectLane:
    def __init__(self, lease: str, addr: str) -> None:
        self.lease = lease
        self.addr = addr
        self.tids: set[int] = set()  # sent and not answered
        self.sock = make_socket(zmq.DEALER, connect=addr, sndhwm=0, server_role="executor")
        self.drops: deque[tuple[str, int, float]] = deque()  # store key, tid, when released

    def drop(self, key: str, tid: int) -> None:
        """The result of ``tid`` (run under this lease) is released: any thread."""
        self.drops.append((key, tid, time.monotonic()))

    def stale_drops(self, older_than: float) -> list[list[Any]]:
        """Drops waiting longer than ``older_than`` s, as ``fn_release``'s ``leased``."""
        out: list[list[Any]] = []
        limit = time.monotonic() - older_than
        while self.drops and self.drops[0][2] <= limit:
            _, tid, _ = self.drops.popleft()
            out.append([tid, self.lease, self.addr])
        return out

    def send(self, task: Outgoing, reply: str, big: BigSender) -> None:
        """Send ``task``; a big one in chunks through ``big`` (its owner paces them).
        Released results' store keys ride along (``drop``)."""
        body: dict[str, Any] = {"reply": reply, "lease": self.lease}
        if self.drops:
            keys = []
            while self.drops:
                keys.append(self.drops.popleft()[0])
            body["drop"] = keys
        message = task_message(P.FN_DIRECT, [task], body)
        if is_big(message):
            big.send(self.sock, message)
        else:
            self.sock.send_multipart(message, copy=False)
        self.tids.add(task[0])

    def close(self) -> None:
        close_socket(self.sock)
