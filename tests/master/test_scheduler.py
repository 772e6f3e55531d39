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


def test_a_group_stays_on_one_executor_while_others_spread() -> None:
    tasks = ["p0", "p1", "b0", "b1", "s0", "s1"]
    groups = {"b0": "stream-0", "s0": "stream-0", "b1": "stream-1", "s1": "stream-1"}
    placed = place_tasks(tasks, [Capacity("e1", 8), Capacity("e2", 8)], groups=groups)
    assert placed["b0"] == placed["s0"]
    assert placed["b1"] == placed["s1"]
    assert placed["b0"] != placed["b1"]  # each group's first task still spreads
    assert placed["p0"] != placed["p1"]


def test_a_group_joins_its_running_tasks_and_overflows_when_full() -> None:
    groups = {"a": "g", "b": "g", "c": "g"}
    placed = place_tasks(
        ["a", "b", "c"], [Capacity("e1", 2), Capacity("e2", 9)], groups=groups, homes={"g": "e1"}
    )
    assert placed["a"] == placed["b"] == "e1"  # where the group already runs, not the emptiest
    assert placed["c"] == "e2"  # no room left there: placed as any task
