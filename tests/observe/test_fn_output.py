"""A function task's output reaches the client that submitted it (``log_to_driver``)."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

import zdf
from zdf import protocol as P
from zdf.errors import ProtocolError
from zdf.executor import fnrunner
from zdf.executor.fnrunner import FunctionRunner
from zdf.jobs import examples
from zdf.localcluster import LocalCluster, wait_until
from zdf.observe import fnout
from zdf.observe.fnout import STDERR, STDOUT, FunctionOutput, OutputPrinter
from zdf.wire.codec import decode
from zdf.wire.payload import pack
from zdf.wire.reactor import Reactor
from zdf.wire.sockets import free_port, make_socket

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def forwarded(output: FunctionOutput, sent: list[dict[str, Any]], tid: int = 7) -> Any:
    return output.forwarding(sent.append, tid, "pkg.mod:Thing.square")


def test_whole_lines_leave_at_once_and_a_burst_is_gathered() -> None:
    clock = Clock()
    output = FunctionOutput("exec-1/w0", clock=clock)
    sent: list[dict[str, Any]] = []
    with forwarded(output, sent):
        output.write(STDOUT, "hel")
        assert sent == []  # no whole line yet
        output.write(STDOUT, "lo\n")
        assert [m["lines"] for m in sent] == [[[STDOUT, "hello"]]]
        output.write(STDERR, "oops\n")
        assert sent[-1]["lines"] == [[STDERR, "oops"]]
        for i in range(fnout.SENDS_PER_INTERVAL):  # a burst within one interval
            output.write(STDOUT, f"burst {i}\n")
        assert len(sent) == fnout.SENDS_PER_INTERVAL  # the rest is gathered
        clock.now += fnout.FLUSH_INTERVAL * 1.5
        output.write(STDOUT, "world\n")  # the interval is over: all of it leaves
        assert len(sent) == fnout.SENDS_PER_INTERVAL + 1
        assert [line for _, line in sent[-1]["lines"]] == ["burst 8", "burst 9", "world"]
        output.write(STDOUT, "the rest")
    assert sent[-1]["lines"] == [[STDOUT, "the rest"]]  # the task ended: sent
    assert {(m["tid"], m["fn"], m["worker"]) for m in sent} == {(7, "square", "exec-1/w0")}
    assert all("dropped" not in m for m in sent)
    output.write(STDOUT, "after the task\n")  # nothing is open: not forwarded
    assert sent[-1]["lines"] == [[STDOUT, "the rest"]]
    # A pickled function has no path: the runner names the task by the function.
    with output.forwarding(sent.append, 8, "!cloudpickle"):
        output.relabel(test_whole_lines_leave_at_once_and_a_burst_is_gathered)
        output.write(STDOUT, "pickled\n")
    assert sent[-1]["fn"] == "test_whole_lines_leave_at_once_and_a_burst_is_gathered"


def test_a_task_forwards_at_most_its_bound_and_says_how_much_it_held_back() -> None:
    output = FunctionOutput("w", max_task_chars=100, clock=Clock())
    sent: list[dict[str, Any]] = []
    with forwarded(output, sent):
        for i in range(50):
            output.write(STDOUT, f"line {i:04d}\n")  # 10 characters each
    lines = [line for m in sent for _, line in m["lines"]]
    assert lines == [f"line {i:04d}" for i in range(10)]
    assert sent[-1]["dropped"] == 400


def test_the_rate_bound_lets_whole_stretches_through_and_marks_the_gaps() -> None:
    clock = Clock()
    output = FunctionOutput("w", rate=10, burst=100, clock=clock)  # 10 lines, then 1 a second
    sent: list[dict[str, Any]] = []
    with forwarded(output, sent):
        for i in range(60):
            output.write(STDOUT, f"line {i:04d}\n")
            clock.now += 0.1  # a line every 0.1 s: ten times what the bucket refills
    lines = [line for m in sent for _, line in m["lines"]]
    # The burst, then nothing until the bucket is half full again (5 s), then a stretch.
    assert lines[:10] == [f"line {i:04d}" for i in range(10)]
    assert lines[10].startswith("[zdf: ") and "characters not forwarded here" in lines[10]
    resumed = int(lines[11].split()[1])
    assert 50 <= resumed <= 60 and lines[11:14] == [
        f"line {i:04d}" for i in range(resumed, resumed + 3)
    ]
    assert sent[-1]["dropped"] == 10 * (60 - (len(lines) - 1))


def test_only_the_workers_own_thread_is_forwarded() -> None:
    output = FunctionOutput("w", clock=Clock())
    sent: list[dict[str, Any]] = []
    with forwarded(output, sent):
        other = threading.Thread(target=output.write, args=(STDOUT, "from a thread\n"))
        other.start()
        other.join(5)
        output.write(STDOUT, "from the task\n")
    assert [line for m in sent for _, line in m["lines"]] == ["from the task"]


def test_streams_and_log_records_are_copied_to_the_open_task() -> None:
    output = FunctionOutput("w", clock=Clock())
    inner = io.StringIO()
    stream = fnout.ForwardingStream(output, STDOUT, inner)
    logger = logging.getLogger("tests.fn_output")
    handler = fnout.ForwardHandler(output)
    logger.addHandler(handler)
    sent: list[dict[str, Any]] = []
    try:
        stream.write("outside\n")
        with forwarded(output, sent):
            stream.write("inside\n")
            logger.warning("careful: %d", 3)
        logger.warning("outside too")
    finally:
        logger.removeHandler(handler)
    assert inner.getvalue() == "outside\ninside\n"  # a copy: the text still goes through
    lines = [entry for m in sent for entry in m["lines"]]
    assert lines == [[STDOUT, "inside"], [STDERR, "WARNING tests.fn_output: careful: 3"]]


def test_the_client_prints_each_line_with_its_tasks_prefix_in_order() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = OutputPrinter(lambda: out, lambda: err)
    body = {
        "fn": "square",
        "pid": 42,
        "worker": "exec-1/w0",
        "lines": [[STDOUT, "a"], [STDERR, "b"], [STDOUT, "c"]],
        "dropped": 12,
    }
    printer(body)
    assert out.getvalue() == "(square pid=42, exec-1/w0) a\n(square pid=42, exec-1/w0) c\n"
    assert err.getvalue().startswith(
        "(square pid=42, exec-1/w0) b\n(square pid=42, exec-1/w0) [zdf: 12 "
    )
    with pytest.raises(ProtocolError):
        printer({"lines": [[5, "no such stream"]]})
    with pytest.raises(ProtocolError):
        printer({"lines": "not a list"})


def messages(pull: zmq.Socket[bytes], count: int, reactor: Reactor) -> list[tuple[str, Any]]:
    got: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        reactor.run_once(0)  # a slow machine may split the tasks over two slices
        if pull.poll(50):
            msg = decode(pull.recv_multipart()[0])
            got.append((msg.op, msg.body))
    return got


def test_the_worker_sends_output_only_to_a_client_that_asked_and_before_the_result(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull = make_socket(zmq.PULL, bind="tcp://127.0.0.1:*")
    addr = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    output = FunctionOutput("exec-1/w0")
    monkeypatch.setattr(sys, "stdout", fnout.ForwardingStream(output, STDOUT, io.StringIO()))
    monkeypatch.setattr(fnrunner, "SLICE_SECONDS", 0)  # a task per slice, as on a slow machine
    # Nobody listens at the master address: hello requests just go unanswered.
    fn = FunctionRunner(reactor, f"127.0.0.1:{free_port()}", "exec-1", "w0", output=output)
    try:
        fn.queue.append(
            (1, "zdf.jobs.examples:chatty", pack([[2], {}]), addr + "#tk+out", 11, None, 1)
        )
        fn.queue.append((2, "zdf.jobs.examples:chatty", pack([[2], {}]), addr + "#tk", 12, None, 2))
        fn.run_slice()
        got = messages(pull, 4, reactor)
    finally:
        fn.close()
        pull.close(0)
    ops = [op for op, _ in got]
    assert ops[-2:] == [P.FN_RESULT, P.FN_RESULT] and set(ops[:-2]) == {P.FN_OUTPUT}, ops
    outputs = [body for op, body in got if op == P.FN_OUTPUT]
    # Only task 11's client asked (its token carries the mark), and its lines come first.
    assert {(b["token"], b["tid"], b["fn"]) for b in outputs} == {("tk+out", 11, "chatty")}
    assert [line for b in outputs for _, line in b["lines"]] == ["line 1 of 2", "line 2 of 2"]


def lines_seen(capsys: pytest.CaptureFixture[str], seen: list[str]) -> list[str]:
    captured = capsys.readouterr()
    seen.extend((captured.out + captured.err).splitlines())
    return seen


@pytest.mark.cluster(executors=1, workers=2)
def test_a_tasks_output_reaches_its_client_through_the_master_and_under_a_lease(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert client.submit(examples.chatty, 2).result(10) == 2
        captured = capsys.readouterr()  # printed before the result came back
        out = [line for line in captured.out.splitlines() if line.startswith("(chatty pid=")]
        assert [line.split(") ", 1)[1] for line in out] == ["line 1 of 2", "line 2 of 2"]
        assert "exec-1/w" in out[0]
        assert captured.err.splitlines()[-1].endswith(") a word on stderr")
        # Lone tasks ask for a lease on a worker; once granted they pass the master by.
        wait_until(
            lambda: client.submit(examples.noop).result(10) is None and client.leased_worker,
            10,
            "a lease",
        )
        assert client.submit(examples.log, "logged under a lease").result(10)
        err = capsys.readouterr().err.splitlines()
        assert [line.split(") ", 1)[1] for line in err if line.startswith("(log pid=")] == [
            "WARNING zdf.examples: logged under a lease"
        ]
        # A task that prints while it runs: the line comes before the task ends.
        marker = Path(cluster.base_dir) / "go"
        future = client.submit(examples.wait_for, str(marker))
        seen: list[str] = []
        wait_until(
            lambda: any(f"waiting for {marker}" in line for line in lines_seen(capsys, seen)),
            10,
            "the task's first line",
        )
        assert not future.done()
        marker.touch()
        assert future.result(10) is True
        # A chatty task: at most its bound, and one line saying what was held back.
        assert client.submit(examples.chatty, 200_000).result(60) == 200_000
        captured = capsys.readouterr()
        texts = [line.split(") ", 1)[1] for line in captured.out.splitlines()]
        texts = [text for text in texts if not text.startswith("[zdf: ")]  # gap notes
        assert sum(len(text) + 1 for text in texts) <= fnout.MAX_TASK_CHARS  # prefixes aside
        assert "characters of this task's output not forwarded" in captured.err


@pytest.mark.cluster(executors=1, workers=1)
def test_log_to_driver_off_prints_nothing(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    with zdf.connect(cluster.master_addr, log_to_driver=False) as client:
        assert client.submit(examples.chatty, 2).result(10) == 2
        assert client.submit(examples.log, "not here").result(10) == "not here"
    captured = capsys.readouterr()
    assert "line 1 of 2" not in captured.out and "not here" not in captured.err
