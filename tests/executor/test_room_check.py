"""The worker's descriptor backstop (zdf.executor.limits.RoomCheck): real counts are
taken rarely while far from the limit, always near it, and a start that does not fit
is refused."""

from __future__ import annotations

import pytest

from zdf.errors import JobError
from zdf.executor.limits import RESERVE_FDS, RoomCheck, count_fds


class Fds:
    def __init__(self, open_: int) -> None:
        self.open = open_
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.open


def test_far_from_the_limit_a_thousand_starts_count_a_few_times() -> None:
    fds = Fds(200)
    room = RoomCheck(100_000, fds)
    for i in range(1000):
        room.check(f"t{i}", 3)
        fds.open += 3  # each task really opens what it declared
    assert fds.calls < 30, fds.calls


def test_near_the_limit_every_start_is_counted_and_refused_when_full() -> None:
    fds = Fds(0)
    room = RoomCheck(100, fds)  # limit: 100 + the reserve
    fds.open = 100 + RESERVE_FDS - 10
    room.check("fits", 10)
    fds.open += 10
    calls = fds.calls
    with pytest.raises(JobError, match="refused"):
        room.check("over", 1)
    assert fds.calls == calls + 1, "the refusal rests on a real count"


def test_a_task_that_opened_more_than_it_declared_is_caught_by_the_next_count() -> None:
    fds = Fds(200)
    room = RoomCheck(1000, fds)
    room.check("liar", 3)
    fds.open = 1000 + RESERVE_FDS  # it opened far more than 3
    with pytest.raises(JobError):
        for i in range(RoomCheck.MIN_RECOUNT + 1):
            room.check(f"t{i}", 1)


def test_the_real_count_is_this_process() -> None:
    assert count_fds() > 0
