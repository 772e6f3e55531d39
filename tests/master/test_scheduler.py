from zdf.master.scheduler import Capacity, place_tasks


def test_spreads_over_free_slots() -> None:
    placed = place_tasks(["a", "b", "c", "d"], [Capacity("e1", 4), Capacity("e2", 4)])
    assert sorted(placed.values()).count("e1") == 2
    assert sorted(placed.values()).count("e2") == 2


def test_prefers_most_free() -> None:
    placed = place_tasks(["a", "b"], [Capacity("e1", 1), Capacity("e2", 5)])
    assert placed == {"a": "e2", "b": "e2"}


def test_stops_when_full() -> None:
    placed = place_tasks(["a", "b", "c"], [Capacity("e1", 1), Capacity("e2", 1), Capacity("e3", 0)])
    assert len(placed) == 2 and "c" not in placed


def test_no_executor_no_placement() -> None:
    assert place_tasks(["a"], []) == {}
