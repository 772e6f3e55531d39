"""Scattered values handed to a worker, of any size: ``fn_put`` on its direct port.

Theory of operation. ``client.scatter`` asks the master where each value goes and
then gives each worker its values itself (``put_values``), one ``fn_put`` request
per value on a DEALER of its own, waiting for each confirmation (the worker
keeps the value and tells the master, so a task taking it may start). A value
whose message passes ``bigmsg.CHUNK_THRESHOLD`` leaves as a chunked transfer
(``zdf.wire.bigmsg``, a window of chunks in flight, paced here), as a big task
argument does; the worker's direct port rebuilds it and answers the request as
if it had come whole. (A value over the cluster's ``max-value-bytes`` never gets
here: ``client.scatter`` refuses it at once, before asking the master.) The wait
for each confirmation has a deadline: ``PUT_TIMEOUT_MIN`` plus the time the
bytes take at ``PUT_MIN_RATE``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import zmq

from zdf import protocol as P
from zdf.errors import Timeout, from_wire
from zdf.wire import bigmsg
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.sockets import close_socket, make_socket

PUT_TIMEOUT_MIN = 10.0  # a scattered value's worker has this long (plus transfer) to confirm
PUT_MIN_RATE = 50e6  # bytes/s a value's transfer is given time for


def put_values(addr: str, values: list[tuple[str, list[Any]]]) -> None:
    """Give the worker at ``addr`` the ``(store key, packed frames)`` of ``values``;
    returns once it confirmed each (``Timeout`` if it does not in time)."""
    sock = make_socket(zmq.DEALER, connect=addr, sndhwm=0, rcvhwm=0, server_role="executor")
    rids = itertools.count(1)
    try:
        for key, frames in values:
            rid = next(rids)
            size = sum(map(len, frames))
            parts = [encode(Kind.REQUEST, P.FN_PUT, rid, {"keys": [key], "nframes": [len(frames)]})]
            parts.extend(frames)
            deadline = time.monotonic() + PUT_TIMEOUT_MIN + size / PUT_MIN_RATE
            if bigmsg.is_big(parts):
                sender = bigmsg.BigSender(bigmsg.send_tracked)
                sender.send(sock, parts)
                while sender.pump():
                    if time.monotonic() > deadline:
                        raise Timeout(f"scattering a value of {size} bytes to {addr} timed out")
                    sock.poll(max(1, int(bigmsg.PUMP_INTERVAL * 1000)), zmq.POLLOUT)
            else:
                sock.send_multipart(parts, copy=False)
            _await(sock, rid, deadline, addr)
    finally:
        close_socket(sock)


def _await(sock: zmq.Socket[bytes], rid: int, deadline: float, addr: str) -> Any:
    while (remaining := deadline - time.monotonic()) > 0:
        if not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
            continue
        msg = decode(sock.recv_multipart()[0])
        if msg.rid != rid:
            continue
        if msg.kind is Kind.ERROR:
            raise from_wire(msg.body)
        return msg.body
    raise Timeout(f"the worker at {addr} did not confirm a scattered value in time")
