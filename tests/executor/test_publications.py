"""An endpoint a task publishes reaches a master even if the first one dies on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zdf import protocol as P
from zdf.config import ExecutorConfig, load_config
from zdf.errors import JobError
from zdf.executor import server as executor_server
from zdf.executor.server import Executor
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import DEFER, Call, Channel
from zdf.wire.sockets import close_socket, free_port, make_socket

pytestmark = pytest.mark.timeout(30)


class FakeMaster:
    """Answers registrations; swallows publications while ``deaf``, records them after."""

    def __init__(self, reactor: Any, addr: str) -> None:
        self.deaf = True
        self.refuse = False
        self.recorded: list[dict[str, Any]] = []
        self.swallowed = 0
        self.sock = make_socket(zmq.ROUTER, bind=f"tcp://{addr}")
        handlers = {P.REGISTER: self.register, P.PUBLISH_ENDPOINT: self.publish}
        self.channel = Channel(reactor, self.sock, handlers, name="fake-master")

    def register(self, call: Call) -> Any:
        return {"epoch": 1, "master": "fake"}

    def publish(self, call: Call) -> Any:
        if self.deaf:
            self.swallowed += 1
            return DEFER  # never answered: the master died with it
        if self.refuse:
            raise JobError("stale endpoint refused")
        self.recorded.append(call.body)
        return None

    def close(self) -> None:
        self.channel.close()
        close_socket(self.sock)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Executor, FakeMaster]]:
    monkeypatch.setattr(executor_server, "RELAY_TIMEOUT", 0.5)
    addr = f"127.0.0.1:{free_port()}"
    config = load_config(
        ExecutorConfig,
        data={
            "join": [addr],
            "worker-addr": f"127.0.0.1:{free_port()}",
            "data-dir": str(tmp_path),
            "workers": 1,
        },
        env={},
    )
    reactor = Reactor()
    master = FakeMaster(reactor, addr)  # bound before the executor connects
    ex = Executor(config, reactor)
    try:
        yield ex, master
    finally:
        master.close()
        ex.close()


def run_until(ex: Executor, cond: Any, timeout: float = 10.0) -> None:
    ex.reactor.run(until=cond, deadline=time.monotonic() + timeout)
    assert cond()


def publish(ex: Executor, name: str = "done", addr: str = "flag") -> dict[str, Any]:
    body = {"job_id": "j", "task_id": "sink-0", "name": name, "addr": addr, "attempt": 1}
    ex._publish(Call(ex.ctl, None, P.PUBLISH_ENDPOINT, 0, body, [], True))
    return body


def test_a_publication_lost_with_the_master_is_sent_again_on_registering(
    setup: tuple[Executor, FakeMaster],
) -> None:
    ex, master = setup
    body = publish(ex)
    run_until(ex, lambda: master.swallowed == 1)
    master.deaf = False  # the next master
    ex._register()  # as after a failover
    run_until(ex, lambda: master.recorded == [body] and not ex._publishing)


def test_a_recorded_or_refused_publication_is_not_sent_again(
    setup: tuple[Executor, FakeMaster],
) -> None:
    ex, master = setup
    master.deaf = False
    body = publish(ex)
    run_until(ex, lambda: master.recorded == [body] and not ex._publishing)
    master.refuse = True
    publish(ex, "out", "tcp://x")
    run_until(ex, lambda: not ex._publishing)  # refused for good: dropped
    master.refuse = False
    ex._register()
    run_until(ex, lambda: ex.registered)
    assert master.recorded == [body]  # nothing sent twice
