from zdf.master.liveness import ExecutorLiveness
from zdf.master.states import ExecutorState as S


def test_silence_makes_suspect_then_dead() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    assert live.tick(0.5) == []
    assert live.tick(0.61) == [("e1", S.ALIVE, S.SUSPECT)]
    assert live.tick(0.9) == []
    assert live.tick(1.0) == [("e1", S.SUSPECT, S.DEAD)]
    assert live.seen("e1", 1.1) is None, "a dead executor must register again"
    assert live.state("e1") is S.DEAD


def test_any_traffic_revives_a_suspect() -> None:
    live = ExecutorLiveness(interval=0.2, ttl=1.0)
    live.add("e1", now=0.0)
    live.tick(0.7)
    assert live.seen("e1", 0.8) == ("e1", S.SUSPECT, S.ALIVE)
    assert live.tick(1.2) == []


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
