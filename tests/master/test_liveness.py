import pytest

from zdf.master.liveness import ExecutorLiveness, Transition
from zdf.master.states import ExecutorState as S


def ticks(live: ExecutorLiveness, start: float, end: float) -> list[tuple[float, Transition]]:
    """Tick at the master's cadence (every interval / 2) from ``start`` to ``end``."""
    moves = []
    step = live.interval / 2
    n = 0
    while start + n * step <= end + 1e-9:
        now = round(start + n * step, 6)
        moves += [(now, move) for move in live.tick(now)]
        n += 1
    return moves


def test_silence_makes_suspect_then_dead() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    moves = ticks(live, 0.0, 1.2)
    assert [move for _, move in moves] == [("e1", S.ALIVE, S.SUSPECT), ("e1", S.SUSPECT, S.DEAD)]
    assert 0.6 <= moves[0][0] <= 0.7, "suspect after three silent intervals"
    assert moves[1][0] == 1.0, "dead after the TTL"
    assert live.seen("e1", 1.3) is None, "a dead executor must register again"
    assert live.state("e1") is S.DEAD


def test_any_traffic_revives_a_suspect() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    ticks(live, 0.0, 0.7)
    assert live.state("e1") is S.SUSPECT
    assert live.seen("e1", 0.8) == ("e1", S.SUSPECT, S.ALIVE)
    assert ticks(live, 0.8, 1.2) == []


def test_a_stalled_master_forgives_the_time_it_was_not_listening() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    live.add("e2", now=0.0)
    ticks(live, 0.0, 0.1)
    live.seen("e1", 0.1)
    # The master's loop stalls for 1.5 s (longer than the TTL): the heartbeats
    # sent meanwhile are still queued, so nobody may be judged on that silence.
    assert live.tick(1.6) == []
    assert live.forgiven > 1.0
    assert live.state("e1") is S.ALIVE and live.state("e2") is S.ALIVE
    # Silence after the master listens again still counts as usual.
    moves = ticks(live, 1.7, 3.0)
    dead_at = {move[0]: now for now, move in moves if move[2] is S.DEAD}
    assert set(dead_at) == {"e1", "e2"}
    assert dead_at["e1"] <= 1.6 + 1.0, "only the deaf time is forgiven, not more"


def test_refused_reconnect_after_disconnect_is_death() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    assert live.refused("e1") is None, "a refusal without a prior disconnect proves nothing"
    assert live.disconnected("e1") == ("e1", S.ALIVE, S.SUSPECT)
    assert live.refused("e1") == ("e1", S.SUSPECT, S.DEAD)


def test_reconnect_clears_the_disconnect() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    live.disconnected("e1")
    live.seen("e1", 0.1)
    assert live.refused("e1") is None
    assert live.state("e1") is S.ALIVE


def test_next_due_is_when_the_next_silence_runs_out() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    eps = 1e-6
    assert live.next_due() is None
    live.add("a", now=10.0)
    live.add("b", now=10.1)
    assert live.next_due() == pytest.approx(10.0 + live.suspect_after)
    live.tick(10.0 + live.suspect_after + eps)  # a: suspect; its next threshold is the ttl
    assert live.state("a") is S.SUSPECT and live.state("b") is S.ALIVE
    assert live.next_due() == pytest.approx(10.1 + live.suspect_after)
    live.tick(10.1 + live.suspect_after + eps)
    assert live.next_due() == pytest.approx(11.0)
    assert live.tick(10.9) == []
    # Checked exactly then (as the master does), a is dead at ttl of silence, not later.
    assert live.tick(11.0 + eps) == [("a", S.SUSPECT, S.DEAD)]
    assert live.next_due() == pytest.approx(11.1)  # a is dead: only b is left to judge
