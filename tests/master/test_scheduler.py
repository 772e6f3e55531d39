from zdf.master.scheduler import Capacity, Shortfall, place_gang, place_tasks


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


def test_a_gang_is_placed_whole_and_spread() -> None:
    placed = place_gang(["s0", "s1", "s2"], [Capacity("e1", 2), Capacity("e2", 2)])
    assert isinstance(placed, dict) and set(placed) == {"s0", "s1", "s2"}
    assert sorted(placed.values()) in (["e1", "e1", "e2"], ["e1", "e2", "e2"])


def test_a_gang_that_does_not_fit_places_nothing_and_says_why() -> None:
    short = place_gang(["a", "b", "c", "d"], [Capacity("e1", 1), Capacity("e2", 2)])
    assert isinstance(short, Shortfall)
    assert str(short) == "needs 4 slots, 3 free on 2 executors"
    assert str(place_gang(["a"], [])) == "needs 1 slot, 0 free on 0 executors"
