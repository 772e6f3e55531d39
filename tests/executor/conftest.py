"""Fixtures of the executor's tests: a reactor of their own, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zdf.wire.reactor import Reactor


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    try:
        yield loop
    finally:
        loop.close()
