"""The bench operators in isolation: producer batches and the syncer's hold/release."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zdf.records import DATA, DDL, RECORD_DTYPE
from zdf.runtime.batches import concat_rows, split_by
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.producer import producer_batch
from zdf.runtime.bench.syncer import Syncer
from zdf.wire.rpc import Call

from .helpers import FakeContext

pytestmark = pytest.mark.timeout(20)


def params(**kw: Any) -> BenchParams:
    base = dict(
        flow_id="f",
        tables=3,
        streams=3,
        rcd_cnt=1000,
        ddl_freq=100,
        batch_size=128,
        rate=0.0,
        sink_dir="/nonexistent",
        window=4,
    )
    return BenchParams(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("streams,batch", [(1, 64), (3, 128), (4, 1000), (3, 7)])
def test_producer_batches_cover_every_pk_once_and_every_ddl_in_every_stream(
    streams: int, batch: int
) -> None:
    p = params(streams=streams, batch_size=batch)
    table = 2
    all_data = []
    for s in range(streams):
        stream = concat_rows(
            [producer_batch(p, table, k, s, ts=1) for k in range(p.producer_batches)]
        )
        data, ddl = stream[stream["tp"] == DATA], stream[stream["tp"] == DDL]
        all_data.append(data["pk"])
        assert (ddl["schema_ver"] == np.arange(1, p.versions + 1)).all()
        assert (ddl["pk"] == ddl["schema_ver"] * p.ddl_freq).all()
        assert (data["schema_ver"] == data["pk"] // p.ddl_freq).all()
        assert (stream["tid"] == table).all()
        # DDL v comes right before pk v*f: the stream is ordered by (pk, DDL first).
        keys = stream["pk"] * 2 - (stream["tp"] == DDL)
        assert (np.diff(keys) > 0).all()
        assert (p.streams_of(table, data["pk"]) == s).all()
    pks = np.sort(np.concatenate(all_data))
    assert (pks == np.arange(1, p.rcd_cnt + 1)).all()


def test_producer_batches_are_deterministic() -> None:
    p = params()
    a, b = producer_batch(p, 1, 3, 2, ts=5), producer_batch(p, 1, 3, 2, ts=5)
    assert a.tobytes() == b.tobytes()


def test_split_by_keeps_order_within_each_key() -> None:
    rows = np.zeros(40, RECORD_DTYPE)
    rows["tid"] = np.arange(40) % 3
    rows["pk"] = np.arange(40)
    parts = dict(split_by(rows, rows["tid"]))
    assert sorted(parts) == [0, 1, 2]
    for t, part in parts.items():
        assert (part["tid"] == t).all() and (np.diff(part["pk"]) > 0).all()
    many = np.zeros(100, RECORD_DTYPE)
    many["tid"] = np.arange(100)[::-1] % 50
    assert sum(len(p) for _, p in split_by(many, many["tid"])) == 100


def make_rows(spec: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(tp, table, pk, version) tuples -> records."""
    rows = np.zeros(len(spec), RECORD_DTYPE)
    for i, (tp, t, pk, v) in enumerate(spec):
        rows[i]["tp"], rows[i]["tid"], rows[i]["pk"], rows[i]["schema_ver"] = tp, t, pk, v
    return rows


@pytest.fixture
def syncer() -> Any:
    p = params(tables=2, streams=2, ddl_freq=4, rcd_cnt=12, batch_size=4)
    ctx = FakeContext(
        "syncer-0",
        {**p.to_params(), "stream": 0, "input": {"task": "receive-0"}, "max-held": 100},
    )
    op = Syncer(ctx)
    op.open()
    yield op
    op.close()


def release(op: Syncer, *pairs: tuple[int, int]) -> None:
    op._on_release(Call(None, None, "release", 0, {"pairs": [list(p) for p in pairs]}))  # type: ignore[arg-type]


def pending_pks(op: Syncer) -> list[tuple[int, int, int]]:
    rows = concat_rows(list(op._pending)) if op._pending else make_rows([])
    op._pending.clear()
    op._pending_rows = 0
    return list(zip(rows["tid"].tolist(), rows["tp"].tolist(), rows["pk"].tolist(), strict=True))


def test_syncer_holds_a_table_after_its_ddl_until_released(syncer: Syncer) -> None:
    batch = make_rows(
        [
            (DATA, 0, 1, 0),
            (DATA, 1, 1, 0),
            (DATA, 0, 3, 0),
            (DDL, 0, 4, 1),
            (DATA, 1, 2, 0),
            (DATA, 0, 4, 1),
            (DDL, 1, 4, 1),
            (DATA, 1, 4, 1),
            (DATA, 0, 5, 1),
        ]
    )
    out = syncer.process(batch)
    assert out is not None
    got = list(zip(out["tid"].tolist(), out["tp"].tolist(), out["pk"].tolist(), strict=True))
    # Each table's rows up to and including its first DDL, in stream order.
    assert got == [(0, 0, 1), (1, 0, 1), (0, 0, 3), (0, 1, 4), (1, 0, 2), (1, 1, 4)]
    assert syncer.held_rows == 3 and syncer.blocked.all()
    release(syncer, (1, 1))
    assert pending_pks(syncer) == [(1, 0, 4)]
    release(syncer, (0, 1))
    assert pending_pks(syncer) == [(0, 0, 4), (0, 0, 5)]
    assert syncer.held_rows == 0 and not syncer.blocked.any()


def test_a_blocked_table_does_not_hold_back_the_others(syncer: Syncer) -> None:
    syncer.process(make_rows([(DATA, 0, 3, 0), (DDL, 0, 4, 1), (DATA, 0, 4, 1)]))
    out = syncer.process(make_rows([(DATA, 1, 1, 0), (DATA, 0, 5, 1), (DATA, 1, 2, 0)]))
    assert out is not None and out["tid"].tolist() == [1, 1]
    assert syncer.held_rows == 2


def test_release_stops_again_at_the_next_ddl(syncer: Syncer) -> None:
    syncer.process(make_rows([(DDL, 0, 4, 1), (DATA, 0, 4, 1), (DDL, 0, 8, 2), (DATA, 0, 8, 2)]))
    release(syncer, (0, 1))
    assert pending_pks(syncer) == [(0, 0, 4), (0, 1, 8)]
    assert syncer.blocked_at[0] == 2 and syncer.held_rows == 1
    release(syncer, (0, 1))  # a repeated release changes nothing
    assert pending_pks(syncer) == [] and syncer.held_rows == 1


def test_syncer_stops_taking_input_above_max_held(syncer: Syncer) -> None:
    syncer.process(make_rows([(DDL, 0, 4, 1)]))
    assert syncer.can_accept()
    syncer.process(make_rows([(DATA, 0, 5, 1)] * 100))
    assert not syncer.can_accept()
    release(syncer, (0, 1))
    assert syncer.can_accept() or syncer._pending_rows >= syncer.max_pending_rows
