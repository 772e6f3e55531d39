"""The pieces of zdf.observe on their own: the loop bridge, the histogram, rates, the listener."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from zdf.config import ExecutorConfig, load_config
from zdf.errors import ConfigError, Timeout, ZdfError
from zdf.observe import families as F
from zdf.observe.bridge import LoopBridge
from zdf.observe.endpoints import Observer, RoleView
from zdf.observe.latency import LatencyHistogram
from zdf.observe.rates import RateMeter, records_done
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import free_port

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def running_reactor() -> Iterator[Reactor]:
    reactor = Reactor()
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        yield reactor
    finally:
        reactor.stop()
        thread.join(5)
        reactor.close()


def test_bridge_runs_the_function_on_the_loop_thread(running_reactor: Reactor) -> None:
    bridge = LoopBridge(running_reactor)
    try:
        seen = bridge.call(threading.get_ident, timeout=2.0)
        assert seen != threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            bridge.call(lambda: 1 / 0, timeout=2.0)
    finally:
        bridge.close()


def test_bridge_times_out_when_the_loop_does_not_run() -> None:
    reactor = Reactor()
    bridge = LoopBridge(reactor)
    try:
        with pytest.raises(Timeout):
            bridge.call(lambda: 1, timeout=0.1)
    finally:
        bridge.close()
        reactor.close()


def test_histogram_buckets_are_cumulative() -> None:
    hist = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.005, 0.5):
        hist.observe(seconds)
    assert hist.buckets() == [("0.001", 2.0), ("0.01", 3.0), ("+Inf", 4.0)]
    assert hist.count == 4
    assert hist.total == pytest.approx(0.5065)


def test_rate_of_a_paced_counter_does_not_flicker() -> None:
    """A task reporting 1000 records every 0.5 s, polled every 0.2 s: a rate between two
    polls would swing between 0 and 5000/s; over the window it stays near 2000/s."""
    meter = RateMeter(window=3.0)
    rates = []
    for step in range(60):
        now = step * 0.2
        value = 1000.0 * int(now / 0.5)
        rate = meter.add(now, value)
        if now >= 3.0:
            rates.append(rate)
    assert min(rates) > 1500 and max(rates) < 2500


def test_rate_restarts_when_the_counter_goes_back() -> None:
    meter = RateMeter(window=3.0)
    meter.add(0.0, 100.0)
    meter.add(1.0, 200.0)
    assert meter.add(2.0, 10.0) == 0.0  # a restarted task: no negative rate
    assert meter.add(3.0, 110.0) == pytest.approx(100.0)


def test_records_done_counts_sinks_only_when_there_are_sinks() -> None:
    tasks = [
        {"kind": "producer", "progress": {"records": 50}},
        {"kind": "sink", "progress": {"records": 20}},
        {"kind": "sink", "progress": {}},
    ]
    assert records_done(tasks) == 20
    assert records_done([{"kind": "fn", "progress": {"records": 3}}]) == 3


def test_http_addr_is_optional_and_checked() -> None:
    assert load_config(ExecutorConfig, data={}).http_addr == ""
    assert load_config(ExecutorConfig, data={"http-addr": "127.0.0.1:8241"}).http_addr
    for bad in ("127.0.0.1", "http://127.0.0.1:80", "ipc:///tmp/x"):
        with pytest.raises(ConfigError, match="http-addr"):
            load_config(ExecutorConfig, data={"http-addr": bad})


def _view(healthy: bool) -> RoleView:
    return RoleView(
        "executor",
        "exec-t",
        lambda: {"registered": healthy, "answer": 42},
        lambda snap: bool(snap["registered"]),
        lambda snap: iter([F.gauge("test_answer", "the answer", snap["answer"])]),
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_observer_serves_metrics_and_health(running_reactor: Reactor) -> None:
    addr = f"127.0.0.1:{free_port()}"
    observer = Observer(addr, running_reactor, _view(True)).start()
    try:
        status, body = _get(f"http://{addr}/metrics")
        assert status == 200
        assert "zdf_test_answer 42.0" in body
        assert 'zdf_process_info{name="exec-t",role="executor"} 1.0' in body
        assert "zdf_process_cpu_seconds_total" in body
        status, body = _get(f"http://{addr}/health")
        assert (status, json.loads(body)["status"]) == (200, "serving")
        assert _get(f"http://{addr}/nothing")[0] == 404
    finally:
        observer.close()


def test_health_is_503_when_not_serving_or_the_loop_is_stuck(running_reactor: Reactor) -> None:
    addr = f"127.0.0.1:{free_port()}"
    observer = Observer(addr, running_reactor, _view(False)).start()
    try:
        status, body = _get(f"http://{addr}/health")
        assert (status, json.loads(body)["status"]) == (503, "not serving")
    finally:
        observer.close()
    stuck = Reactor()  # never run: its loop answers nobody
    addr = f"127.0.0.1:{free_port()}"
    observer = Observer(addr, stuck, _view(True))
    observer.start()
    try:
        status, body = _get(f"http://{addr}/health")
        assert (status, json.loads(body)["status"]) == (503, "unresponsive")
        assert _get(f"http://{addr}/metrics")[0] == 503
    finally:
        observer.close()
        stuck.close()


def test_a_port_in_use_is_a_one_line_error(running_reactor: Reactor) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        addr = f"127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(ZdfError, match=f"cannot serve http at {addr}"):
            Observer(addr, running_reactor, _view(True)).start()
