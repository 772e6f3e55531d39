"""``Peers``: the instances of one dataflow task message each other beside their streams."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zdf.dataflow import Flow
from zdf.dataflow.operator import Source
from zdf.runtime.link import PeerLink
from zdf.runtime.local import LocalRunner
from zdf.wire.rpc import Call

pytestmark = pytest.mark.timeout(30)


class Roll(Source):
    """Instance i says ``hi {from: i}`` to every other instance on connect, ``all`` once
    it heard from all of them, and finishes once all said ``all`` (a barrier)."""

    @classmethod
    def output_dtype(
        cls, params: dict[str, Any], inputs: list[np.dtype[Any]]
    ) -> np.dtype[Any] | None:
        return None

    def steps(self) -> int:
        return 1

    def batch(self, step: int) -> np.ndarray:
        return np.zeros(1, [("x", "<i8")])

    def setup(self) -> None:
        super().setup()
        self.heard: set[int] = set()
        self.told: set[int] = set()
        self.ended = False
        handlers = {"hi": self._hi, "all": self._all}
        self.roll = self.peers("roll", handlers, on_connect=self._connected)

    def _connected(self, instance: int, link: PeerLink) -> None:
        link.notify("hi", {"from": self.instance})  # may run inside peers(): use the link

    def _hi(self, call: Call) -> None:
        self.heard.add(int(call.body["from"]))
        if len(self.heard) == self.parallelism - 1:  # the same, through send()
            for other in self.roll.links:
                self.roll.send(other, "all", {"from": self.instance})
        self._maybe_end()

    def _all(self, call: Call) -> None:
        self.told.add(int(call.body["from"]))
        self._maybe_end()

    def completed(self) -> None:
        self.ended = True
        self._maybe_end()

    def _maybe_end(self) -> None:
        others = self.parallelism - 1
        if self.ended and len(self.heard) == len(self.told) == others and not self.done:
            self.mark_done()
            self.finish({"heard": sorted(self.heard)})


def test_every_instance_hears_every_other() -> None:
    flow = Flow("peers")
    flow.source("roll", Roll, parallelism=3)
    with LocalRunner(flow.to_job()) as runner:
        results = runner.run(timeout=20)
    assert results == {
        "roll-0": {"heard": [1, 2]},
        "roll-1": {"heard": [0, 2]},
        "roll-2": {"heard": [0, 1]},
    }
