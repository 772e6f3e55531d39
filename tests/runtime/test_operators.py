"""The bench operators in isolation: producer batches and the DDL gate's hold/release."""

from __future__ import annotations

import numpy as np
import pytest

from zdf.records import DATA, DDL, RECORD_DTYPE
from zdf.runtime.batches import concat_rows, split_by
from zdf.runtime.bench.gate import TableGate
from zdf.runtime.bench.producer import producer_batch

from .helpers import params

pytestmark = pytest.mark.timeout(20)


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


def pks(pieces: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """(table, tp, pk) of every row of ``pieces``, in order."""
    rows = concat_rows(pieces) if pieces else make_rows([])
    return list(zip(rows["tid"].tolist(), rows["tp"].tolist(), rows["pk"].tolist(), strict=True))


def test_gate_holds_a_table_after_its_ddl_until_released() -> None:
    gate = TableGate(2)
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
    passed, stops = gate.admit(batch)
    # Each table's data up to its first DDL, in stream order; the DDLs are stops.
    assert pks(passed) == [(0, 0, 1), (1, 0, 1), (0, 0, 3), (1, 0, 2)]
    assert [(s.table, s.version, int(s.row["pk"][0])) for s in stops] == [(0, 1, 4), (1, 1, 4)]
    assert all(s.row["tp"][0] == DDL for s in stops)
    assert gate.held_rows == 3 and all(gate.stopped)
    assert gate.waiting() == [(0, 1), (1, 1)]
    passed, stops = gate.release(1, 1)
    assert pks(passed) == [(1, 0, 4)] and not stops
    passed, stops = gate.release(0, 1)
    assert pks(passed) == [(0, 0, 4), (0, 0, 5)] and not stops
    assert gate.held_rows == 0 and not any(gate.stopped)


def test_a_stopped_table_does_not_hold_back_the_others() -> None:
    gate = TableGate(2)
    gate.admit(make_rows([(DATA, 0, 3, 0), (DDL, 0, 4, 1), (DATA, 0, 4, 1)]))
    passed, stops = gate.admit(make_rows([(DATA, 1, 1, 0), (DATA, 0, 5, 1), (DATA, 1, 2, 0)]))
    assert pks(passed) == [(1, 0, 1), (1, 0, 2)] and not stops
    assert gate.held_rows == 2


def test_release_stops_again_at_the_next_ddl() -> None:
    gate = TableGate(1)
    gate.admit(make_rows([(DDL, 0, 4, 1), (DATA, 0, 4, 1), (DDL, 0, 8, 2), (DATA, 0, 8, 2)]))
    passed, stops = gate.release(0, 1)
    assert pks(passed) == [(0, 0, 4)]
    assert [(s.table, s.version) for s in stops] == [(0, 2)]
    assert gate.stopped_at[0] == 2 and gate.held_rows == 1
    passed, stops = gate.release(0, 1)  # a repeated release changes nothing
    assert passed == [] and stops == [] and gate.held_rows == 1


def test_a_release_ahead_opens_every_ddl_up_to_it() -> None:
    """Learning "written (t, 2)" while stopped at (t, 1): a replay passes both DDLs."""
    gate = TableGate(1)
    gate.admit(make_rows([(DATA, 0, 3, 0), (DDL, 0, 4, 1), (DATA, 0, 4, 1)]))
    gate.admit(make_rows([(DDL, 0, 8, 2), (DATA, 0, 8, 2), (DDL, 0, 12, 3), (DATA, 0, 12, 3)]))
    passed, stops = gate.release(0, 2)
    assert pks(passed) == [(0, 0, 4), (0, 0, 8)]
    assert [(s.table, s.version) for s in stops] == [(0, 3)]
    assert gate.held_rows == 1


def test_ddls_known_written_do_not_stop_a_table() -> None:
    """A replay brings DDLs written long ago: they pass (unwritten) without a stop."""
    gate = TableGate(2)
    gate.written = [2, 0]
    passed, stops = gate.admit(
        make_rows([(DDL, 0, 4, 1), (DATA, 0, 4, 1), (DDL, 0, 8, 2), (DATA, 0, 8, 2)])
    )
    assert pks(passed) == [(0, 0, 4), (0, 0, 8)] and not stops and not gate.stopped[0]


def test_held_rows_are_views_of_the_batch() -> None:
    gate = TableGate(1)
    batch = make_rows([(DDL, 0, 4, 1)] + [(DATA, 0, 5, 1)] * 100)
    gate.admit(batch)
    assert gate.held_rows == 100
    assert np.shares_memory(gate.held[0][0].rows, batch)  # no copy while a barrier is open
