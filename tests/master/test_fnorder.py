"""The order of queued function tasks: priority first, then arrival; put-backs at the head."""

from __future__ import annotations

from dataclasses import dataclass

from zdf.master.fnorder import TaskOrder


@dataclass(eq=False)
class Task:
    name: str
    priority: int = 0


def drain(order: TaskOrder[Task]) -> list[str]:
    out = []
    while order:
        assert order.peek() is next(iter(order))
        out.append(order.pop().name)
    return out


def test_higher_priority_first_then_in_order_of_arrival() -> None:
    order: TaskOrder[Task] = TaskOrder()
    for task in [Task("a"), Task("b", 5), Task("c"), Task("d", -1), Task("e", 5)]:
        order.push(task)
    assert len(order) == 5
    assert drain(order) == ["b", "e", "a", "c", "d"]
    assert len(order) == 0 and not order


def test_a_task_put_back_goes_ahead_of_its_level_and_removal_keeps_the_rest() -> None:
    order: TaskOrder[Task] = TaskOrder()
    a, b, c, back = Task("a"), Task("b"), Task("c", 1), Task("back")
    for task in (a, b, c):
        order.push(task)
    order.push_front(back)
    assert order.remove(b) and not order.remove(b)
    assert order.remove(c)  # its level is gone with it
    assert drain(order) == ["back", "a"]
