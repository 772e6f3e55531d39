"""The order in which queued function tasks are placed: priority, then arrival.

One FIFO per priority level and the levels in a sorted list, so that taking
the next task and queueing one are O(1) (a heap of a million tasks costs
microseconds per task in Python; there are few distinct priorities). A task
put back (its worker died, or gave it back) goes to the head of its level.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Prioritised(Protocol):
    priority: int


T = TypeVar("T", bound=Prioritised)


class TaskOrder(Generic[T]):
    def __init__(self) -> None:
        self._levels: dict[int, deque[T]] = {}
        self._keys: list[int] = []  # -priority of each level, ascending: highest first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[T]:
        for key in self._keys:
            yield from self._levels[-key]

    def _level(self, priority: int) -> deque[T]:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = deque()
            bisect.insort(self._keys, -priority)
        return level

    def push(self, task: T) -> None:
        level = self._levels.get(task.priority)
        (level if level is not None else self._level(task.priority)).append(task)
        self._size += 1

    def push_front(self, task: T) -> None:
        self._level(task.priority).appendleft(task)
        self._size += 1

    def peek(self) -> T:
        return self._levels[-self._keys[0]][0]

    def pop(self) -> T:
        priority = -self._keys[0]
        level = self._levels[priority]
        task = level.popleft()
        self._size -= 1
        if not level:
            del self._levels[priority]
            self._keys.pop(0)
        return task

    def remove(self, task: T) -> bool:
        level = self._levels.get(task.priority)
        if level is None:
            return False
        try:
            level.remove(task)
        except ValueError:
            return False
        self._size -= 1
        if not level:
            del self._levels[task.priority]
            self._keys.remove(-task.priority)
        return True
