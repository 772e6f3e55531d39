"""A sending port in a process of its own, for tests/runtime/test_hub_twins.py.

``python twin_sender.py SPEC TOTAL``: opens an ``OutPort`` whose hub binds at SPEC,
prints its address, and serves TOTAL batches of 10 rows to whoever subscribes, until
stdin closes (the test's end) or a minute passes.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from zdf.records import RECORD_DTYPE
from zdf.runtime.pipe import OutPort
from zdf.wire import Reactor

LIFETIME = 60.0


def main() -> None:
    spec, total = sys.argv[1], int(sys.argv[2])
    reactor = Reactor()
    sent = [0]

    def send(ch: int) -> None:
        while port.credit(0) > 0 and sent[0] < total:
            rows = np.zeros(10, RECORD_DTYPE)
            rows["pk"] = np.arange(sent[0] * 10, sent[0] * 10 + 10)
            port.send(0, rows, sent[0], sent[0] + 1)
            sent[0] += 1
        if sent[0] == total and not port.eos_sent(0):
            port.send_eos(0, total)

    def subscribed(ch: int, start: int) -> None:
        sent[0] = start

    port = OutPort(reactor, spec, 1, on_credit=send, on_subscribe=subscribed)
    print(port.addr, flush=True)
    reactor.add_reader(sys.stdin.fileno(), reactor.stop)  # the test closed our stdin
    reactor.run(deadline=time.monotonic() + LIFETIME)
    port.close()


if __name__ == "__main__":
    main()
