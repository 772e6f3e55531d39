"""Peer messages: positional bodies that round-trip, and refusals of anything malformed."""

from __future__ import annotations

from typing import Any

import pytest

from zdf.errors import ProtocolError
from zdf.metastore.raft.messages import (
    Append,
    AppendReply,
    Snapshot,
    SnapshotReply,
    Vote,
    VoteReply,
    parse_message,
)
from zdf.metastore.raft.transport import HEADS, _parse
from zdf.wire.codec import Kind, encode, packb

SAMPLES = [
    Vote(3, 10, 2, pre=True),
    VoteReply(3, True),
    Append(3, 9, 2, ((3, b"\x81\xa2op\xa4noop"), (3, b"x")), 8, 17, "127.0.0.1:1"),
    AppendReply(3, False, 4, 17, "127.0.0.1:2"),
    Snapshot(3, 100, 2, 0, ((b"kk", b"v"),), True, 18, "127.0.0.1:1"),
    SnapshotReply(3, 100, 1, True, 18),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.op)
def test_a_message_survives_the_wire(msg: Any) -> None:
    frame = HEADS[msg.op] + packb(msg.to_wire())
    assert frame == encode(Kind.EVENT, msg.op, 0, msg.to_wire())  # the usual envelope
    assert _parse(frame) == msg


@pytest.mark.parametrize(
    "op, body",
    [
        ("raft_append", [1, 0, 0, [[1]], 0, 0, ""]),  # an entry without its payload
        ("raft_append", [1, -5, 0, [], 0, 0, ""]),  # a negative index
        ("raft_append", [1, 0, 0, [[1, "text"]], 0, 0, ""]),  # a payload that is not bytes
        ("raft_append", [1, 0, 0, [], 0, 0]),  # a field short
        ("raft_append", {"term": 1}),  # the old map form
        ("raft_append_reply", [1, 1, 0, 0, ""]),  # 1 is not a boolean
        ("raft_vote", [True, 0, 0, False]),  # a boolean is not a term
        ("raft_vote_reply", [2**64, True, False]),  # out of range
        ("raft_snapshot", [0, 1, 1, 0, [[b"k"]], True, 0, ""]),
        ("raft_snapshot_reply", None),
        ("no_such_op", []),
    ],
)
def test_malformed_bodies_are_refused(op: str, body: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_message(op, body)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        packb([1, 2]),
        encode(Kind.REQUEST, "raft_vote", 1, [1, 0, 0, False]),  # peers only send events
        packb({"v": 2, "k": "ev", "op": "raft_vote", "rid": 0, "b": [1, 0, 0, False]}),
    ],
)
def test_malformed_envelopes_are_refused(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        _parse(frame)
