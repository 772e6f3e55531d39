"""FencedBatch: many writes, few transactions, each write told how it went."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from zdf.errors import JobError, NotLeader, ZdfError
from zdf.master.election import LostLeadership
from zdf.master.writebatch import MAX_OPS, FencedBatch
from zdf.metastore.commands import TxnOp
from zdf.metastore.txn import put_op
from zdf.wire.reactor import Reactor


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.txns: list[list[bytes]] = []
        self.fail = fail

    def __call__(self, ops: Sequence[TxnOp]) -> None:
        if self.fail is not None:
            raise self.fail
        self.txns.append([op.key for op in ops])  # type: ignore[attr-defined]


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def test_writes_of_one_turn_share_transactions_and_a_key_repeats_in_the_next(
    reactor: Reactor,
) -> None:
    txns = Recorder()
    lost: list[str] = []
    batch = FencedBatch(reactor, txns, lost.append)
    results: list[ZdfError | None] = []
    for i in range(MAX_OPS + 10):
        batch.add([put_op(f"k{i}", b"v")], results.append)
    batch.add([put_op("k0", b"again")], results.append)
    batch.flush()
    assert results == [None] * (MAX_OPS + 11)
    assert [len(t) for t in txns.txns] == [MAX_OPS, 11]
    assert txns.txns[1][-1] == b"k0" and b"k0" in txns.txns[0]
    assert not lost


def test_a_stale_write_is_refused_alone(reactor: Reactor) -> None:
    txns = Recorder()
    batch = FencedBatch(reactor, txns, lambda why: None)
    results: dict[str, ZdfError | None] = {}

    def stale() -> None:
        raise JobError("stale")

    batch.add([put_op("a", b"1")], lambda e: results.__setitem__("a", e))
    batch.add([put_op("b", b"2")], lambda e: results.__setitem__("b", e), stale)
    batch.flush()
    assert results["a"] is None and isinstance(results["b"], JobError)
    assert txns.txns == [[b"a"]]


def test_lost_leadership_fails_every_write_and_steps_down(reactor: Reactor) -> None:
    batch = FencedBatch(reactor, Recorder(LostLeadership("gone")), (lost := []).append)
    results: list[ZdfError | None] = []
    for i in range(3):
        batch.add([put_op(f"k{i}", b"v")], results.append)
    batch.flush()
    assert len(results) == 3 and all(isinstance(r, NotLeader) for r in results)
    assert lost == ["gone"]


def test_a_write_larger_than_a_transaction_is_split_in_order_and_done_once(
    reactor: Reactor,
) -> None:
    txns = Recorder()
    batch = FencedBatch(reactor, txns, lambda why: None)
    results: list[ZdfError | None] = []
    batch.add([put_op(f"k{i:04d}", b"v") for i in range(3 * MAX_OPS + 1)], results.append)
    batch.add([put_op("last", b"v")], results.append)
    batch.flush()
    assert results == [None, None]
    assert [len(t) for t in txns.txns] == [MAX_OPS, MAX_OPS, MAX_OPS, 2]
    keys = [k for t in txns.txns for k in t]
    assert keys == [*sorted(keys[:-1]), b"last"]


def test_a_turn_is_bounded_and_the_rest_waits_for_the_next(reactor: Reactor) -> None:
    class Slow(Recorder):
        def __call__(self, ops: Sequence[TxnOp]) -> None:
            super().__call__(ops)
            time.sleep(0.03)  # a slow metastore write, not a synchronisation

    txns = Slow()
    batch = FencedBatch(reactor, txns, lambda why: None)
    done: list[ZdfError | None] = []
    batch.add([put_op(f"k{i:04d}", b"v") for i in range(10 * MAX_OPS)], done.append)
    batch.flush(budget=0.05)
    assert 1 <= len(txns.txns) < 10 and done == [], "it yields before the whole write"
    batch.flush()
    assert len(txns.txns) == 10 and done == [None]
