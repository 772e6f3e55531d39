"""The state machine on its own: revisions, txn, leases, history, compaction, durability."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zdf.errors import CompactedError, LeaseNotFound, ProtocolError, ZdfError
from zdf.metastore.commands import MAX_KEY_BYTES, Comparison, Delete, Put, Txn, parse_command
from zdf.metastore.kv import Event, KeyValue
from zdf.metastore.state import DEDUPE_WINDOW_MS, MetaState
from zdf.wire.codec import packb


@pytest.fixture
def state(tmp_path: Path) -> Iterator[MetaState]:
    s = MetaState(str(tmp_path / "db"))
    yield s
    s.close()


class Log:
    """Feeds commands with consecutive indexes, as the server (or a Raft log) does."""

    def __init__(self, state: MetaState) -> None:
        self.state = state

    def __call__(self, **cmd: Any) -> Any:
        return self.state.apply(self.state.applied_index + 1, cmd, sync=False)


def put(key: bytes, value: bytes, **extra: Any) -> dict[str, Any]:
    return {"op": "put", "key": key, "value": value, **extra}


def test_revisions_and_versions(state: MetaState) -> None:
    apply = Log(state)
    assert apply(**put(b"a", b"1"))["revision"] == 1
    assert apply(**put(b"a", b"2"))["revision"] == 2
    assert apply(**put(b"b", b"x"))["revision"] == 3
    a = state.get(b"a")
    assert a is not None
    assert (a.value, a.create_revision, a.mod_revision, a.version) == (b"2", 1, 2, 2)
    # Deleting a missing key changes nothing, so it takes no revision.
    assert apply(op="delete", key=b"zz") == {
        "op": "delete",
        "deleted": 0,
        "prev_kvs": [],
        "revision": 3,
    }
    assert apply(op="delete", key=b"a")["revision"] == 4
    assert state.get(b"a") is None
    # Re-created: a new life, version 1 again.
    apply(**put(b"a", b"3"))
    a = state.get(b"a")
    assert a is not None and (a.create_revision, a.version) == (5, 1)
    assert state.revision == 5 and state.applied_index == 6


def test_prev_kv_and_delete_range(state: MetaState) -> None:
    apply = Log(state)
    for key in (b"p/1", b"p/2", b"p/3", b"q/1"):
        apply(**put(key, b"v"))
    prev = apply(**put(b"p/1", b"w", prev_kv=True))["prev_kv"]
    assert prev["value"] == b"v" and prev["version"] == 1
    result = apply(op="delete", key=b"p/", prefix=True, prev_kv=True)
    assert result["deleted"] == 3
    assert [kv["key"] for kv in result["prev_kvs"]] == [b"p/1", b"p/2", b"p/3"]
    # One delete-range is one revision.
    assert result["revision"] == 6
    assert [kv.key for kv in state.range(b"")[0]] == [b"q/1"]


def test_range_sorted_with_limit(state: MetaState) -> None:
    apply = Log(state)
    for key in (b"k3", b"k1", b"k2", b"j"):
        apply(**put(key, key))
    kvs, more = state.range(b"k")
    assert [kv.key for kv in kvs] == [b"k1", b"k2", b"k3"] and not more
    kvs, more = state.range(b"k", limit=2)
    assert [kv.key for kv in kvs] == [b"k1", b"k2"] and more


def test_user_keys_cannot_touch_internal_keys(state: MetaState) -> None:
    apply = Log(state)
    for key in (b"mapplied", b"mrevision", b"h", b"l" + bytes(8), b"\xff", b""):
        apply(**put(key, b"junk"))
    assert state.revision == 6 and state.applied_index == 6
    assert len(state.range(b"")[0]) == 6


def cmp(key: bytes, target: str, result: str, value: Any) -> dict[str, Any]:
    return {"key": key, "target": target, "result": result, "value": value}


def test_txn_compares(state: MetaState) -> None:
    apply = Log(state)
    create = {
        "compare": [cmp(b"lock", "version", "=", 0)],
        "success": [put(b"lock", b"me")],
        "failure": [{"op": "get", "key": b"lock"}],
    }
    first = apply(op="txn", **create)
    assert first["succeeded"] and first["revision"] == 1
    second = apply(op="txn", **create)
    assert not second["succeeded"] and second["revision"] == 1
    assert second["responses"][0]["kvs"][0]["value"] == b"me"

    cases = [
        (cmp(b"lock", "value", "=", b"me"), True),
        (cmp(b"lock", "value", "!=", b"me"), False),
        (cmp(b"lock", "value", ">", b"ma"), True),
        (cmp(b"lock", "mod_revision", "<", 2), True),
        (cmp(b"lock", "mod_revision", ">", 1), False),
        (cmp(b"lock", "create_revision", "=", 1), True),
        (cmp(b"lock", "version", "!=", 1), False),
        (cmp(b"missing", "value", "=", b""), False),  # no value to compare
        (cmp(b"missing", "mod_revision", "=", 0), True),
    ]
    for compare, expected in cases:
        assert apply(op="txn", compare=[compare])["succeeded"] is expected, compare


def test_txn_writes_share_one_revision(state: MetaState) -> None:
    apply = Log(state)
    apply(**put(b"old", b"1"))
    result = apply(
        op="txn",
        success=[put(b"a", b"1"), put(b"b", b"2"), {"op": "delete", "key": b"old"}],
    )
    assert result["revision"] == 2
    assert [e.revision for e in state.history(2).events] == [2, 2, 2]


def test_txn_rejects_two_writes_of_one_key(state: MetaState) -> None:
    result = Log(state)(op="txn", success=[put(b"a", b"1"), put(b"a", b"2")])
    assert isinstance(result, ProtocolError)
    assert state.revision == 0 and state.applied_index == 1


def test_bad_command_is_a_deterministic_error(state: MetaState) -> None:
    apply = Log(state)
    assert isinstance(apply(op="nope"), ProtocolError)
    assert isinstance(apply(op=["unhashable"]), ProtocolError)
    assert isinstance(apply(op="put", key=5, value=b"x"), ProtocolError)
    assert isinstance(apply(op="put", key=b"k", value=b"x" * (2 << 20)), ProtocolError)
    # The index is consumed (every replica would agree), the data is untouched.
    assert state.applied_index == 4 and state.revision == 0


def test_leases(state: MetaState) -> None:
    apply = Log(state)
    lease = apply(op="lease_grant", ttl=10, now=1000.0)["id"]
    assert lease == 1
    assert state.leases[lease].deadline == 1010.0
    apply(**put(b"s/1", b"x", lease=lease))
    apply(**put(b"s/2", b"y", lease=lease))
    apply(**put(b"keep", b"z"))
    assert isinstance(apply(**put(b"bad", b"x", lease=99)), LeaseNotFound)
    assert sorted(state.lease_keys(lease)) == [b"s/1", b"s/2"]
    # Moving a key off the lease detaches it.
    apply(**put(b"s/2", b"y2"))
    assert state.lease_keys(lease) == [b"s/1"]

    assert apply(op="lease_keepalive", id=lease, now=1005.0)["ttl"] == 10.0
    assert state.leases[lease].deadline == 1015.0
    # The leader decided at 1012 that it expired, but a keepalive moved it: skipped.
    assert apply(op="lease_expire", ids=[lease], now=1012.0)["expired"] == []
    revision = state.revision
    result = apply(op="lease_expire", ids=[lease, 77], now=1016.0)
    assert result["expired"] == [lease] and result["revision"] == revision + 1
    assert state.get(b"s/1") is None and state.get(b"keep") is not None
    assert lease not in state.leases
    assert isinstance(apply(op="lease_keepalive", id=lease, now=1.0), LeaseNotFound)


def test_lease_revoke_deletes_keys_in_one_revision(state: MetaState) -> None:
    apply = Log(state)
    lease = apply(op="lease_grant", ttl=5, now=0.0)["id"]
    apply(**put(b"a", b"1", lease=lease))
    apply(**put(b"b", b"1", lease=lease))
    assert apply(op="lease_revoke", id=lease)["revision"] == 3
    assert state.range(b"")[0] == []
    assert [e.type for e in state.history(3).events] == ["delete", "delete"]
    assert isinstance(apply(op="lease_revoke", id=lease), LeaseNotFound)
    assert isinstance(apply(op="lease_grant", ttl=5, now=0.0, id=lease + 1), dict)
    assert isinstance(apply(op="lease_grant", ttl=5, now=0.0, id=lease + 1), ZdfError)
    assert apply(op="lease_grant", ttl=5, now=0.0)["id"] == lease + 2


def test_history_from_a_revision(state: MetaState) -> None:
    apply = Log(state)
    apply(**put(b"w/a", b"1"))
    apply(**put(b"x", b"1"))
    apply(**put(b"w/a", b"2"))
    apply(op="delete", key=b"w/a")
    chunk = state.history(2, b"w/")
    assert [(e.type, e.revision, e.value) for e in chunk.events] == [
        ("put", 3, b"2"),
        ("delete", 4, b""),
    ]
    assert chunk.events[0].prev_kv is not None and chunk.events[0].prev_kv.value == b"1"
    assert chunk.events[1].prev_kv is not None and chunk.events[1].prev_kv.value == b"2"
    assert chunk.next_revision == 5
    assert state.history(5).events == []


def test_history_chunks_never_split_a_revision(state: MetaState) -> None:
    apply = Log(state)
    apply(op="txn", success=[put(f"k{i}".encode(), b"v") for i in range(5)])
    apply(**put(b"z", b"v"))
    chunk = state.history(1, max_events=2)
    assert len(chunk.events) == 5 and chunk.next_revision == 2
    assert [e.revision for e in state.history(chunk.next_revision).events] == [2]


def test_compaction(state: MetaState) -> None:
    apply = Log(state)
    for i in range(5):
        apply(**put(b"k", str(i).encode()))
    assert apply(op="compact", revision=3)["compact_revision"] == 3
    with pytest.raises(CompactedError):
        state.history(2)
    assert [e.revision for e in state.history(3).events] == [3, 4, 5]
    assert isinstance(apply(op="compact", revision=2), CompactedError)
    assert isinstance(apply(op="compact", revision=99), ZdfError)


def test_batch_sees_its_own_writes_and_is_exactly_once(state: MetaState) -> None:
    entries = [
        (1, put(b"a", b"1")),
        (2, {"op": "txn", "compare": [cmp(b"a", "version", "=", 1)], "success": [put(b"b", b"")]}),
        (3, {"op": "delete", "key": b"", "prefix": True}),
    ]
    out = state.apply_batch(entries, sync=True)
    assert [r["revision"] for r in out.results if isinstance(r, dict)] == [1, 2, 3]
    assert [e.type for e in out.events] == ["put", "put", "delete", "delete"]
    # Replayed entries (a log re-read after a crash) are skipped, not applied twice.
    again = state.apply_batch([*entries, (4, put(b"c", b"1"))], sync=True)
    assert again.results[:3] == [None, None, None]
    assert state.revision == 4 and state.applied_index == 4
    with pytest.raises(ValueError):
        state.apply_batch([(9, put(b"d", b"1"))], sync=True)


def test_reopen_gives_the_same_state(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    first = MetaState(path)
    apply = Log(first)
    lease = apply(op="lease_grant", ttl=7, now=50.0)["id"]
    apply(**put(b"a", b"1", lease=lease))
    apply(**put(b"b", b"2"))
    apply(op="compact", revision=2)
    snapshot = (first.range(b""), first.revision, first.applied_index, dict(first.leases))
    first.close()

    second = MetaState(path)
    try:
        assert (second.range(b""), second.revision, second.applied_index) == snapshot[:3]
        assert dict(second.leases) == snapshot[3]
        assert second.compact_revision == 2
        assert Log(second)(op="lease_grant", ttl=1, now=0.0)["id"] == lease + 1
        assert second.lease_keys(lease) == [b"a"]
    finally:
        second.close()


def test_a_retried_request_gets_the_first_result_and_old_records_go(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    state = MetaState(path)
    apply = Log(state)
    first = apply(**put(b"a", b"1", req=b"r1", ts=1_000))
    assert apply(**put(b"a", b"2", req=b"r1", ts=2_000)) == first  # a retry: not applied
    assert state.get(b"a").value == b"1"  # type: ignore[union-attr]
    state.close()
    # Reopened (the lower bound of the stamps is read back), a much later write
    # forgets the record, so the same id is then a new request.
    state = MetaState(path)
    try:
        apply = Log(state)
        late = 1_000 + 2 * DEDUPE_WINDOW_MS + 1
        apply(**put(b"b", b"1", req=b"r2", ts=late))
        again = apply(**put(b"a", b"3", req=b"r1", ts=late))
        assert again["revision"] > first["revision"] and state.get(b"a").value == b"3"  # type: ignore[union-attr]
    finally:
        state.close()


def test_parsed_commands_give_the_results_of_parsing(tmp_path: Path) -> None:
    """The leader hands its own parsed commands to apply_batch: same state, same results."""
    commands = [
        Put(b"a", b"1").to_dict(),
        Txn((Comparison(b"a", "version", "=", 1),), (Put(b"b", b"2"),), ()).to_dict(),
        Delete(b"", prefix=True, prev_kv=True).to_dict(),
    ]
    outcomes = []
    for use_parsed in (False, True):
        state = MetaState(str(tmp_path / f"db-{use_parsed}"))
        entries = list(enumerate(commands, start=1))
        parsed = {i: parse_command(c) for i, c in entries} if use_parsed else None
        out = state.apply_batch(entries, sync=False, parsed=parsed)
        outcomes.append((out.results, out.events, state.revision))
        state.close()
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "body",
    [
        {"key": b"k" * (MAX_KEY_BYTES + 1), "value": b""},
        {"key": b"k", "value": b"", "lease": -1},
        {"key": b"k", "value": 5},
        {"key": b"k", "value": b"", "prev_kv": 1},
    ],
)
def test_put_parsing_refuses_bad_fields(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        Put.from_dict(body)


def test_put_parsing_takes_str_as_utf8() -> None:
    assert Put.from_dict({"key": "k", "value": "v"}) == Put(b"k", b"v")


@pytest.mark.parametrize("with_prev", [False, True])
def test_history_records_read_back_in_both_stored_forms(with_prev: bool) -> None:
    kv = KeyValue(b"k", b"new", 3, 9, 4, 7)
    prev = KeyValue(b"k", b"old", 3, 8, 3, 0) if with_prev else None
    for event in (Event("put", kv, prev), Event("delete", KeyValue(b"k", b"", 0, 9, 0, 0), kv)):
        assert Event.unpack(event.pack()) == event
        assert len(event.pack()) < len(packb(event.to_wire()))  # positional, no field names
        assert Event.unpack(packb(event.to_wire())) == event  # history stored as the wire form


@pytest.mark.parametrize("record", [[], ["put"], ["put", [b"k"], None], 7])
def test_a_malformed_history_record_is_a_protocol_error(record: object) -> None:
    with pytest.raises(ProtocolError):
        Event.unpack(packb(record))
