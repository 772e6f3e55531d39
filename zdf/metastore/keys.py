"""Where things live inside the LevelDB of one replica.

Every LevelDB key starts with a one-byte namespace, so a user key can never
collide with an internal one, whatever bytes it holds::

    k<user key>                      -> KeyValue record (value, revisions, version, lease)
    m<name>                          -> meta counters (applied index, revision, ...)
    l<lease id: u64>                 -> lease record (ttl, deadline)
    a<lease id: u64><user key>       -> b"" (the keys attached to a lease)
    h<revision: u64><seq: u32>       -> one watch event of that revision
    d<request id>                    -> [stamp ms, result] of a deduplicated client write
    q<stamp ms: u64><request id>     -> b"" (the dedupe records in age order, for cleanup)
    e<index: u64>                    -> Raft log entry [term, payload]
    r<name>                          -> Raft hard state (term, vote, log start)

The Raft keys (``e``, ``r``) describe the log; everything else is the state
machine, and a snapshot is exactly the state-machine keys at one applied index.

Integers are big-endian so that LevelDB's byte order is numeric order: history
scans run in revision order and compaction is one range delete.
"""

from __future__ import annotations

DATA = b"k"
META = b"m"
LEASE = b"l"
ATTACH = b"a"
HISTORY = b"h"

META_APPLIED = META + b"applied"
META_REVISION = META + b"revision"
META_COMPACT = META + b"compact"
META_LEASE_NEXT = META + b"lease_next"
DEDUPE = b"d"
DEDUPE_AGE = b"q"
LOG = b"e"
RAFT = b"r"
RAFT_TERM = RAFT + b"term"
RAFT_VOTE = RAFT + b"vote"
RAFT_SNAP_INDEX = RAFT + b"snap_index"
RAFT_SNAP_TERM = RAFT + b"snap_term"
RAFT_PREFIXES = (LOG, RAFT)


def is_state_key(db_key: bytes) -> bool:
    """True for a state-machine key (what a snapshot holds), False for the Raft log."""
    return not db_key.startswith(RAFT_PREFIXES)


def log_key(index: int) -> bytes:
    return LOG + u64(index)


def dedupe_key(request_id: bytes) -> bytes:
    return DEDUPE + request_id


def dedupe_age_key(stamp_ms: int, request_id: bytes) -> bytes:
    return DEDUPE_AGE + u64(stamp_ms) + request_id


def u64(number: int) -> bytes:
    return number.to_bytes(8, "big")


def from_u64(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


def data_key(user_key: bytes) -> bytes:
    return DATA + user_key


def user_key(db_key: bytes) -> bytes:
    return db_key[len(DATA) :]


def lease_key(lease_id: int) -> bytes:
    return LEASE + u64(lease_id)


def lease_id_of(db_key: bytes) -> int:
    return from_u64(db_key[len(LEASE) :])


def attach_prefix(lease_id: int) -> bytes:
    return ATTACH + u64(lease_id)


def attach_key(lease_id: int, key: bytes) -> bytes:
    return attach_prefix(lease_id) + key


def history_key(revision: int, seq: int) -> bytes:
    return HISTORY + u64(revision) + seq.to_bytes(4, "big")


def history_revision(db_key: bytes) -> int:
    return from_u64(db_key[len(HISTORY) :])


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix`` (a one-byte namespace)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
