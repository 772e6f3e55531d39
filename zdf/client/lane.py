"""A client's lease on one worker: its lone tasks go there past the master.

See ``zdf.master.fnleases`` for how leases are granted and end. The lane is a
DEALER to the worker's ``direct`` ROUTER; results come back on the client's
result socket as for any task. It remembers which tasks it carried, so that
they can be sent again through the master when the lease ends.
"""

from __future__ import annotations

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

    def send(self, task: Outgoing, reply: str, big: BigSender) -> None:
        """Send ``task``; a big one in chunks through ``big`` (its owner paces them)."""
        body = {"reply": reply, "lease": self.lease}
        message = task_message(P.FN_DIRECT, [task], body)
        if is_big(message):
            big.send(self.sock, message)
        else:
            self.sock.send_multipart(message, copy=False)
        self.tids.add(task[0])

    def close(self) -> None:
        close_socket(self.sock)
