"""Apply hints (zdf.metastore.hints): a follower that writes the leader's write set ends
in exactly the state it would reach by running the commands, and a hint that does not
line up, or is malformed, changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zdf.errors import ProtocolError
from zdf.metastore import keys
from zdf.metastore.apply import Counters
from zdf.metastore.client import MetaClient
from zdf.metastore.hints import ApplyHint, HintInbox
from zdf.metastore.process import MetastoreCluster
from zdf.metastore.state import MetaState
from zdf.wire.codec import packb


def put(key: bytes, value: bytes, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "key": key, "value": value, **extra}


def req(n: int) -> dict[str, Any]:
    return {"req": n.to_bytes(8, "big"), "ts": 1_000 + n}


# Batches of commands covering every kind of write: puts (with a lease, with prev_kv),
# deletes (one key, a prefix, a missing key), txns both ways, leases granted, kept
# alive, revoked and expired with keys attached, a compaction, a client's retry (the
# same request id again) and commands that fail.
BATCHES: list[list[dict[str, Any]]] = [
    [
        put(b"a", b"1", **req(1)),
        put(b"b", b"2", **req(2)),
        {"op": "lease_grant", "ttl": 5, "now": 0.0},
    ],
    [
        put(b"a", b"3", prev_kv=True, **req(3)),
        put(b"l/x", b"v", lease=1),
        put(b"l/y", b"v", lease=1),
    ],
    [
        put(b"a", b"3", prev_kv=True, **req(3)),
        {"op": "delete", "key": b"b"},
        {"op": "delete", "key": b"nope"},
    ],
    [
        {
            "op": "txn",
            "compare": [{"key": b"a", "target": "version", "op": "=", "value": 2}],
            "success": [put(b"t", b"yes")],
            "failure": [put(b"t", b"no")],
        },
        {"op": "lease_keepalive", "id": 1, "now": 3.0},
        put(b"z", b"1", lease=99),  # no such lease: fails, writes nothing
    ],
    [
        {"op": "lease_grant", "ttl": 1, "now": 0.0},
        put(b"m/1", b"v", lease=2),
        put(b"m/2", b"v", lease=2),
    ],
    [{"op": "lease_expire", "ids": [2], "now": 10.0}, {"op": "lease_revoke", "id": 1}],
    [put(b"p/1", b"v"), put(b"p/2", b"v"), {"op": "delete", "key": b"p/", "prefix": True}],
    [{"op": "compact", "revision": 4}, put(b"after", b"compact", **req(4))],
]


def state_machine(state: MetaState) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in state.db.iterator() if keys.is_state_key(k)]


@pytest.fixture
def states(tmp_path: Path) -> Iterator[tuple[MetaState, MetaState, MetaState]]:
    made = [MetaState(str(tmp_path / name)) for name in ("leader", "hinted", "ran")]
    yield made[0], made[1], made[2]
    for state in made:
        state.close()


def run(state: MetaState, batch: list[dict[str, Any]], hint_term: int | None = None) -> Any:
    start = state.applied_index + 1
    entries = [(start + i, cmd) for i, cmd in enumerate(batch)]
    return state.apply_batch(entries, sync=False, hint_term=hint_term)


def test_a_hinted_follower_reaches_the_same_state(
    states: tuple[MetaState, MetaState, MetaState],
) -> None:
    leader, hinted, ran = states
    for batch in BATCHES:
        outcome = run(leader, batch, hint_term=7)
        hint = outcome.hint
        assert hint is not None and hint.last_term == 7
        assert (hint.first, hint.last) == (
            leader.applied_index - len(batch) + 1,
            leader.applied_index,
        )
        events = hinted.apply_hint(ApplyHint.unpack(hint.pack()))
        assert events == outcome.events  # the same watch events, decoded from the hint
        run(ran, batch)
        assert dict(hinted.leases) == dict(ran.leases) == dict(leader.leases)
    for other in (hinted, ran):
        assert state_machine(other) == state_machine(leader)
        assert other.applied_index == leader.applied_index
        assert (other.revision, other.compact_revision) == (
            leader.revision,
            leader.compact_revision,
        )
        assert dict(other.leases) == dict(leader.leases)
    assert leader.leases == {}  # both leases went: the hints carried their removal
    # And what each state goes on to do next is the same (counters, dedupe, leases).
    follow_up = [put(b"a", b"again", **req(1)), {"op": "lease_grant", "ttl": 5, "now": 20.0}]
    results = [run(s, follow_up).results for s in (leader, hinted, ran)]
    assert results[0] == results[1] == results[2]


def test_a_hint_that_does_not_line_up_changes_nothing(
    states: tuple[MetaState, MetaState, MetaState],
) -> None:
    leader, hinted, _ = states
    first = run(leader, BATCHES[0], hint_term=1).hint
    second = run(leader, BATCHES[1], hint_term=1).hint
    assert first is not None and second is not None
    before = state_machine(hinted)
    assert hinted.apply_hint(second) is None  # starts after a batch this state lacks
    assert state_machine(hinted) == before and hinted.applied_index == 0
    run(hinted, [put(b"other", b"history")])  # the same index, another revision
    wrong = ApplyHint(2, 2, 1, 0, [keys.DATA + b"q", b"x"], {}, Counters(1, 0, 1), 0)
    assert hinted.apply_hint(wrong) is None
    assert hinted.get(b"q") is None


@pytest.mark.parametrize(
    "writes",
    [
        [keys.LOG + keys.u64(1), packb([1, b"forged"])],  # the Raft log is not a hint's
        [keys.META_APPLIED, keys.u64(99)],  # nor are the counters
        [keys.DATA + b"k", 5],  # a value that is not bytes
        [7, b"v"],  # a key that is not bytes
        [b"", b"v"],  # an empty key
    ],
)
def test_a_malformed_write_leaves_the_state_alone(tmp_path: Path, writes: list[Any]) -> None:
    state = MetaState(str(tmp_path / "db"))
    try:
        hint = ApplyHint(1, 1, 1, 0, [keys.DATA + b"ok", b"v", *writes], {}, Counters(1, 0, 1), 0)
        assert state.apply_hint(ApplyHint.unpack(hint.pack())) is None
        assert state.applied_index == 0 and state.get(b"ok") is None
        assert state.db.get(keys.log_key(1)) is None
    finally:
        state.close()


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",
        packb("not an array"),
        packb([1, 1, 1, 0, [], [], [1, 0, 1]]),  # a field short
        packb([0, 0, 1, 0, [], [], [1, 0, 1], 0]),  # an empty range
        packb([2, 1, 1, 0, [], [], [1, 0, 1], 0]),
        packb([1, 1, 1, -1, [], [], [1, 0, 1], 0]),  # a negative counter
        packb([1, 1, 1, 0, [b"k"], [], [1, 0, 1], 0]),  # a key without its value
        packb([1, 1, 1, 0, [], [["x"]], [1, 0, 1], 0]),  # a lease id that is not a number
        packb([1, 1, 1, 0, [], [[1, "ttl", 0]], [1, 0, 1], 0]),
        packb([1, 1, 1, 0, [], [], [1, 0], 0]),  # counters short
    ],
)
def test_malformed_hints_are_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        ApplyHint.unpack(body)


# -- on a real cluster ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_followers_apply_hints_and_agree_with_the_leader(tmp_path: Path) -> None:
    with MetastoreCluster(str(tmp_path), 3) as cluster:
        cluster.leader()
        with MetaClient(cluster.endpoints, timeout=10.0) as client:
            lease = client.lease_grant(30.0)
            for i in range(200):
                client.put(f"h/{i % 20}", f"v{i}", lease=lease if i % 3 == 0 else 0)
                if i % 50 == 49:
                    client.delete(f"h/{i % 7}")
            client.lease_revoke(lease)
            revision = client.put("h/last", "x")

        def view(member: Any) -> tuple[list[Any], int]:
            with MetaClient(member.addr, timeout=5.0) as one:
                return one.range_with_revision("h/", serializable=True)

        deadline = time.monotonic() + 10
        while any(view(m)[1] < int(revision) for m in cluster.members):
            assert time.monotonic() < deadline, "replicas did not catch up"
            time.sleep(0.01)
        views = [view(m) for m in cluster.members]
        for member in cluster.members:
            status = member.status()
            assert status is not None
            if status["role"] == "follower":
                # Nearly every entry came with a hint (a batch applied before its hint
                # arrived is run instead: that is allowed, not the rule).
                assert status["hinted_entries"] > 100, status
        assert views[0] == views[1] == views[2]
        assert len(views[0][0]) > 0


def test_the_inbox_hands_out_only_hints_that_line_up() -> None:
    def hint(first: int, last: int, term: int = 2) -> bytes:
        return ApplyHint(first, last, term, 0, [], {}, Counters(1, 0, 1), 0).pack()

    terms = {i: 2 for i in range(1, 40)}
    inbox = HintInbox(limit=3)
    inbox.add(hint(5, 9), applied=10)  # already applied: dropped
    inbox.add(b"\xc1", applied=0)
    assert inbox.bad == 1 and not inbox
    inbox.add(hint(11, 14), applied=10)
    inbox.add(hint(15, 20), applied=10)
    inbox.add(hint(21, 30, term=1), applied=10)
    inbox.add(hint(31, 35), applied=10)  # over the limit: dropped
    assert inbox.stop_before(12, 40) == 14  # a run from 12 stops before the hint at 15
    assert inbox.stop_before(16, 18) == 18  # no hint starts in 17..18
    assert inbox.take(11, 13, terms.get) is None  # entry 14 not committed here yet
    assert inbox.take(15, 30, terms.get) is not None
    assert inbox.take(21, 30, terms.get) is None  # the log holds other entries (term 2)
    inbox.forget(30)
    assert not inbox
