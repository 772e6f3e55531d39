"""Blocking calls to whichever replica leads, with a deadline and safe retries.

Theory of operation: one DEALER per endpoint, kept open across calls. A call
goes to the replica believed to lead (at first the first endpoint) and waits
at most ``attempt_timeout`` for it; then:

- a reply ends the call; the replica that gave it is remembered as leader;
- ``NotLeader`` with a hint: ask the hinted replica next (the hint is added
  to the endpoints if new), unless that replica just timed out -- a follower
  may still name a leader that has died;
- ``NotLeader`` without a hint (an election is on) or an attempt timeout:
  ask the next endpoint, after a short pause once every endpoint was tried;
- a remote ``UnknownOutcome`` (the leader lost its leadership while the write
  waited): retry like a timeout.

Writes carry a request id that stays the same across the retries of one
call, and the state machine answers a repeated id with the first result,
so a retry never applies a write twice. An id is this client's random
64-bit prefix (drawn again in a forked child) and a counter: unique without
a system call per write. If the deadline passes, a write
that may have reached a leader raises ``UnknownOutcome``; one that every
replica refused (``NotLeader``) raises a plain ``Timeout``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from typing import Any

import zmq

from zdf.errors import NotLeader, ProtocolError, Timeout, UnknownOutcome, ZdfError, from_wire
from zdf.wire.codec import PROTOCOL_VERSION, Kind, encode, unpackb
from zdf.wire.sockets import close_socket, make_socket

DEFAULT_ATTEMPT_TIMEOUT = 0.5
ELECTION_PAUSE = 0.05
SUSPECT_FOR = 1.0
RECV_SLICE_MS = 10
_REPLY = Kind.REPLY.value
_ERROR = Kind.ERROR.value


class _Attempt(Exception):
    """One attempt did not answer in time."""


class LeaderRpc:
    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("the metastore client needs at least one endpoint")
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.leader: str | None = None
        self._next = 0
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._suspect: dict[str, float] = {}
        self._rids = itertools.count(1)
        self._pid = os.getpid()
        self._req_prefix = os.urandom(8)
        self._reqs = itertools.count(1)
        self.retries = 0

    def close(self) -> None:
        for sock in self._sockets.values():
            close_socket(sock)
        self._sockets.clear()

    # -- choosing a replica -------------------------------------------------------------
    def _target(self) -> str:
        if self.leader is not None:
            return self.leader
        addr = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        return addr

    def _socket(self, addr: str) -> zmq.Socket[bytes]:
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._sockets.clear()
            self._pid = os.getpid()
            self._req_prefix = os.urandom(8)  # nor its request ids
        sock = self._sockets.get(addr)
        if sock is None:
            sock = make_socket(zmq.DEALER, connect=addr, server_role="metastore")
            # Replies are awaited by blocking recv calls of this length, checking the
            # deadline between them: one call per reply, no Poller built per wait.
            sock.setsockopt(zmq.RCVTIMEO, RECV_SLICE_MS)
            self._sockets[addr] = sock
        return sock

    def _drop(self, addr: str) -> None:
        close_socket(self._sockets.pop(addr, None))
        self._suspect[addr] = time.monotonic() + SUSPECT_FOR
        if self.leader == addr:
            self.leader = None

    def _follow(self, hint: Any) -> bool:
        if not isinstance(hint, str) or not hint:
            return False
        if self._suspect.get(hint, 0.0) > time.monotonic():
            return False
        if hint not in self.endpoints:
            self.endpoints.append(hint)
        self.leader = hint
        return True

    # -- calling ------------------------------------------------------------------------
    def call(self, op: str, body: dict[str, Any], *, write: bool) -> Any:
        deadline = time.monotonic() + self.timeout
        if write:
            body = {**body, "req": self._request_id()}
        maybe_sent = False
        tried = 0
        last: ZdfError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            addr = self._target()
            tried += 1
            try:
                return self._attempt(addr, op, body, min(remaining, self.attempt_timeout))
            except _Attempt:
                maybe_sent = True
                self._drop(addr)
                last = Timeout(f"{op!r} to {addr}: no reply in time")
            except NotLeader as exc:
                last = exc
                if self.leader == addr:
                    self.leader = None
                if self._follow(exc.data.get("leader")):
                    continue
            except UnknownOutcome as exc:  # leadership moved under a pending write
                maybe_sent = True
                last = exc
                self.leader = None
            self.retries += 1
            if tried % len(self.endpoints) == 0:
                time.sleep(min(ELECTION_PAUSE, max(0.0, deadline - time.monotonic())))
        if write and maybe_sent:
            raise UnknownOutcome(
                f"{op}: no answer within {self.timeout}s; it may or may not have been applied"
            )
        detail = f" (last: {last.message})" if last is not None else ""
        raise Timeout(f"{op!r}: no leader answered within {self.timeout}s{detail}")

    def _request_id(self) -> bytes:
        if self._pid != os.getpid():
            self._socket(self.endpoints[0])  # forked: renew the prefix (and the sockets)
        return self._req_prefix + next(self._reqs).to_bytes(8, "big")

    def _attempt(self, addr: str, op: str, body: dict[str, Any], timeout: float) -> Any:
        sock = self._socket(addr)
        rid = next(self._rids)
        try:
            sock.send(encode(Kind.REQUEST, op, rid, body), zmq.NOBLOCK)
        except zmq.Again:
            raise _Attempt() from None
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() >= deadline:
                raise _Attempt()
            try:
                frame = sock.recv()  # waits at most RECV_SLICE_MS (see _socket)
            except zmq.Again:
                continue  # the loop's deadline check decides
            try:
                reply = unpackb(frame)
            except ProtocolError:
                continue
            if type(reply) is not dict or reply.get("v") != PROTOCOL_VERSION:
                continue  # not an answer of ours
            if reply.get("rid") != rid:
                continue  # a late answer to an earlier attempt
            kind = reply.get("k")
            if kind == _ERROR:
                raise from_wire(reply.get("b"))
            if kind != _REPLY:
                continue
            self.leader = addr
            self._suspect.pop(addr, None)
            return reply.get("b")
