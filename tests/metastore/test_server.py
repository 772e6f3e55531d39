"""The real server as a subprocess: client ops, watches, leases, restarts, bad input."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack
import pytest
import zmq

from zdf.errors import CompactedError, LeaseNotFound, Timeout, UnknownOutcome
from zdf.metastore import Compare, Event, MetaClient, Watch, delete_op, get_op, put_op
from zdf.metastore.process import MetastoreProcess
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.sockets import close_socket, free_port, make_socket


def collect(watch: Watch, count: int, timeout: float = 10.0) -> list[Event]:
    """Wait (with a deadline) for ``count`` events."""
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    while len(events) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        event = watch.get(remaining)
        if event is not None:
            events.append(event)
    return events


def test_kv_ops(client: MetaClient) -> None:
    assert client.get("missing") is None
    r1 = client.put("a", "1")
    r2 = client.put(b"a", b"2", prev_kv=True)
    assert r2 == r1 + 1
    assert r2.prev_kv is not None and r2.prev_kv.value == b"1"
    kv = client.get("a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"a",
        b"2",
        r1,
        r2,
        2,
    )
    assert client.revision == r2  # every response carries the revision
    for key in ("d/3", "d/1", "d/2"):
        client.put(key, key)
    assert [kv.key for kv in client.range("d/")] == [b"d/1", b"d/2", b"d/3"]
    assert [kv.key for kv in client.range("d/", limit=2)] == [b"d/1", b"d/2"]
    kvs, revision = client.range_with_revision("d/")
    assert revision == client.revision and len(kvs) == 3
    assert client.delete("d/1") == 1
    assert client.delete("d/", prefix=True) == 2
    assert client.delete("d/", prefix=True) == 0
    assert client.get("a", serializable=True) is not None


def test_txn(client: MetaClient) -> None:
    ok = client.txn([Compare.version("lock") == 0], [put_op("lock", "me")], [get_op("lock")])
    assert ok.succeeded and ok.responses[0] == ok.revision
    lost = client.txn([Compare.version("lock") == 0], [put_op("lock", "you")], [get_op("lock")])
    assert not lost.succeeded
    assert [kv.value for kv in lost.responses[0]] == [b"me"]
    kv = client.get("lock")
    assert kv is not None
    swap = client.txn(
        [Compare.value("lock") == "me", Compare.mod_revision("lock") == kv.mod_revision],
        [put_op("lock", "me2"), delete_op("nothing")],
    )
    assert swap.succeeded and swap.responses[1] == 0
    assert not client.txn([Compare.create_revision("lock") > 10**9]).succeeded


def test_status(client: MetaClient, server: MetastoreProcess) -> None:
    status = client.status()
    assert status["leader"] == "meta-1" and status["leader_addr"] == server.addr
    assert status["term"] == 1
    assert [m["name"] for m in status["members"]] == ["meta-1"]
    client.put("k", "v")
    assert client.status()["commit_index"] >= 1


def test_concurrent_writers_group_commit(server: MetastoreProcess) -> None:
    revisions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        with MetaClient(server.addr) as c:
            for i in range(40):
                r = int(c.put(f"w{n}/{i}", "x"))
                with lock:
                    revisions.append(r)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(revisions) == list(range(1, 241))
    with MetaClient(server.addr) as c:
        status = c.status()
    # Group commit: concurrent writes shared synced batches.
    assert status["write_commands"] == 240
    assert status["write_batches"] < status["write_commands"]


def test_shared_client_is_thread_safe(client: MetaClient) -> None:
    def work(n: int) -> None:
        for i in range(20):
            client.put(f"t{n}", str(i))
            assert client.get(f"t{n}") is not None

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(client.range("t")) == 4


def test_watch_live(client: MetaClient) -> None:
    with client.watch("w/") as watch:
        client.put("w/a", "1")
        client.put("other", "1")
        client.delete("w/a")
        events = collect(watch, 2)
    assert [(e.type, e.key, e.value) for e in events] == [
        ("put", b"w/a", b"1"),
        ("delete", b"w/a", b""),
    ]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"


def test_watch_from_a_revision_then_live(client: MetaClient) -> None:
    first = client.put("h/a", "1")
    client.put("h/b", "2")
    with client.watch("h/", start_revision=first + 1) as watch:
        client.put("h/c", "3")
        events = collect(watch, 2)
        assert [e.key for e in events] == [b"h/b", b"h/c"]
        assert watch.poll() == []


def test_watch_poll_for_a_reactor(client: MetaClient) -> None:
    watch = client.watch("r/")
    try:
        poller = zmq.Poller()
        poller.register(watch.socket, zmq.POLLIN)
        client.put("r/1", "x")
        deadline = time.monotonic() + 10
        events: list[Event] = []
        while not events and time.monotonic() < deadline:
            poller.poll(int(watch.check_interval * 1000))
            events.extend(watch.poll())
        assert [e.key for e in events] == [b"r/1"]
    finally:
        watch.close()


def test_watch_catches_up_a_long_history(client: MetaClient) -> None:
    for batch in range(25):  # 2,500 events, 100 per revision
        client.txn([], [put_op(f"l/{batch:02}/{i:03}", "v") for i in range(100)])
    with client.watch("l/", start_revision=1) as watch:
        events = collect(watch, 2500, timeout=30)
        assert watch.poll(0.2) == []
    assert [e.key for e in events] == sorted(e.key for e in events)
    assert len({e.key for e in events}) == 2500


def test_slow_watcher_misses_nothing(client: MetaClient) -> None:
    value = b"v" * 10_000
    with client.watch("slow/") as watch:
        # The watcher reads nothing while 3,000 events pile up (more than the
        # socket queues hold), so the server must fall back to history.
        for i in range(3000):
            client.put(f"slow/{i:05}", value)
        events = collect(watch, 3000, timeout=60)
        assert watch.poll(0.2) == []
    assert [e.key for e in events] == [f"slow/{i:05}".encode() for i in range(3000)]


def test_watch_compacted(client: MetaClient) -> None:
    for i in range(5):
        client.put("c", str(i))
    client.compact(3)
    with pytest.raises(CompactedError):
        client.watch("", start_revision=2)
    with client.watch("", start_revision=3) as watch:
        assert [e.revision for e in collect(watch, 3)] == [3, 4, 5]


def test_watch_resumes_after_server_restart(server: MetastoreProcess) -> None:
    client = MetaClient(server.addr)
    try:
        watch = client.watch("x/")
        client.put("x/a", "1")
        assert [e.key for e in collect(watch, 1)] == [b"x/a"]

        server.kill()
        server.start()
        client.put("x/b", "2")
        client.put("x/c", "3")
        events = collect(watch, 2, timeout=20)
        assert [e.key for e in events] == [b"x/b", b"x/c"]
        assert watch.resubscribes >= 1
        # No duplicate of anything already seen, and nothing more.
        client.put("x/d", "4")
        assert [e.key for e in collect(watch, 1)] == [b"x/d"]
        assert watch.poll(0.2) == []
        watch.close()
    finally:
        client.close()


def test_data_survives_restart(server: MetastoreProcess) -> None:
    with MetaClient(server.addr) as client:
        revision = client.put("durable", "yes")
        assert server.stop() == 0  # SIGTERM: a clean exit
        server.start()
        kv = client.get("durable")
        assert kv is not None and kv.mod_revision == revision


def test_lease_expiry_removes_keys(client: MetaClient) -> None:
    lease = client.lease_grant(0.5)
    client.put("s/me", "x", lease=lease)
    client.put("s/other", "y")
    assert client.lease_ttl(lease, keys=True)["keys"] == [b"s/me"]
    with client.watch("s/") as watch:
        events = collect(watch, 1, timeout=10)
    assert [(e.type, e.key) for e in events] == [("delete", b"s/me")]
    assert client.get("s/me") is None and client.get("s/other") is not None
    with pytest.raises(LeaseNotFound):
        client.lease_keepalive(lease)


def test_keepalive_keeps_a_lease(client: MetaClient) -> None:
    lease = client.lease_grant(1.0)
    client.put("k/me", "x", lease=lease)
    with client.watch("k/") as watch:
        for _ in range(6):  # 1.8 s in all, well past the TTL
            assert watch.get(0.3) is None
            assert client.lease_keepalive(lease) == 1.0
        assert client.get("k/me") is not None
        client.lease_revoke(lease)
        assert [e.type for e in collect(watch, 1)] == ["delete"]
    with pytest.raises(LeaseNotFound):
        client.lease_revoke(lease)


def test_timeouts_are_unknown_outcome_for_writes() -> None:
    with MetaClient(f"127.0.0.1:{free_port()}", timeout=0.3) as client:
        with pytest.raises(UnknownOutcome):
            client.put("k", "v")
        with pytest.raises(Timeout) as info:
            client.get("k")
        assert not isinstance(info.value, UnknownOutcome)


# -- bad input -----------------------------------------------------------------------
def raw(addr: str, frames: list[bytes], timeout: float = 3.0) -> Any:
    sock = make_socket(zmq.DEALER, connect=addr)
    try:
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        return decode(sock.recv_multipart()[0])
    finally:
        close_socket(sock)


def request(op: str, body: Any, version: int = 1) -> bytes:
    frame: bytes = msgpack.packb({"v": version, "k": "req", "op": op, "rid": 7, "b": body})
    return frame


BAD_FRAMES = [
    b"garbage",
    b"\xc1",
    b"",
    msgpack.packb([1, 2, 3]),
    request("get", {"key": b"k"}, version=99),
    request("no_such_op", {}),
    request("get", {"key": 5}),
    request("get", {}),
    request("get", ["key"]),
    request("range", {"prefix": b"", "limit": -1}),
    request("range", {"prefix": b"", "limit": True}),
    request("get", {"key": b"k", "serializable": "yes"}),
    request("put", {"key": b"k"}),
    request("put", {"key": b"k", "value": [1]}),
    request("put", {"key": b"k", "value": b"v", "lease": "x"}),
    request("put", {"key": b"k" * 10_000, "value": b"v"}),
    request("put", {"key": b"k", "value": b"v" * (2 << 20)}),
    request("put", None),
    request("delete", {"key": b"k", "prefix": 1}),
    request("txn", {"compare": [{"key": b"k", "target": "bogus", "result": "=", "value": 1}]}),
    request("txn", {"compare": "x"}),
    request("txn", {"success": [{"op": "drop", "key": b"k"}]}),
    request("txn", {"success": [{"op": [1], "key": b"k"}]}),
    request("txn", {"failure": [{"op": "put", "key": {}, "value": b""}]}),
    request("txn", {"compare": [{"key": b"k", "target": "version", "result": "=", "value": b"x"}]}),
    request("lease_grant", {"ttl": -1}),
    request("lease_grant", {"ttl": float("nan")}),
    request("lease_keepalive", {"id": -1}),
    request("lease_revoke", {"id": None}),
    request("watch", {"prefix": b""}),
    request("watch_cancel", {"watch_id": "x"}),
    request("compact", {"revision": "1"}),
    msgpack.packb({"v": 1, "k": "req", "op": "x" * 500, "rid": 1, "b": {}}),
    msgpack.packb({"v": 1, "k": "req", "op": "get", "rid": "one", "b": {}}),
]


def test_bad_input_gets_an_error_and_the_server_keeps_answering(
    server: MetastoreProcess, client: MetaClient
) -> None:
    for frame in BAD_FRAMES:
        reply = raw(server.addr, [frame])
        assert reply is not None, frame[:60]
        assert reply.kind is Kind.ERROR, (frame[:60], reply)
        assert isinstance(reply.body, dict) and reply.body.get("message"), reply
    # Several frames in one message, and an event (no reply expected) are fine too.
    assert raw(server.addr, [request("status", {}), b"extra"]).kind is Kind.REPLY
    one_way_put = encode(Kind.EVENT, "put", 0, {"key": b"evil", "value": b"x"})
    assert raw(server.addr, [one_way_put], timeout=0.2) is None
    # Too large for the socket: ZeroMQ drops the connection; nothing else happens.
    assert raw(server.addr, [b"x" * (5 << 20)], timeout=0.5) is None
    assert client.status()["leader"] == "meta-1"
    assert client.put("still", "alive") > 0
    assert client.get("evil") is None  # one-way messages never write
    assert server.proc is not None and server.proc.poll() is None
    assert "Traceback" not in server.log_tail(10_000)  # refused, never crashed a handler
