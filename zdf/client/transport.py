"""The client's sockets and its I/O thread: how tasks leave and results come back.

Theory of operation. A ``Transport`` owns one DEALER to the master and one PULL
on which workers send results straight back (one hop fewer than through the
master). Its address and a random token travel with every ``fn_submit`` batch
(``reply`` = ``endpoint#token``); a result without the token is dropped, so
nothing else that reaches the port can pose as a result. A background I/O
thread reads both sockets and hands ``fn_result`` batches to ``on_results``.

Sending: a task submitted while nothing else is in flight (the synchronous
``submit(...).result()`` pattern) is sent at once by the calling thread, with
no hand-off. Otherwise it goes to an outbox and the I/O thread, woken, sends
whatever has piled up as one ``fn_submit`` batch: a burst costs the master one
message per few hundred tasks. One lock orders both paths, so tasks reach the
master in submission order.

Receiving: a thread blocked in ``Future.result()`` reads the result socket
itself (``wait_here``) when no one else does, so a lone task's answer wakes
the waiting thread directly instead of passing through the I/O thread (a
thread hand-off costs about as much as a network hop). Each socket has a lock,
held by whichever thread uses it; the I/O thread waits on the sockets' file
descriptors (an OS-level poll, which touches no socket) and reads only when it
gets the lock. While the only task in flight is one the caller sent itself
("lone"), the I/O thread leaves the results to the caller, so that it does not
wake up and compete for the GIL on every answer; ``attend`` (a callback,
``await``, ``as_completed``) hands it back to the I/O thread at once, and any
other waiting style (polling ``done()``) is served by a slow fallback poll.

Leases. A lone task sent through the master also asks for a lease on a
worker (``zdf.master.fnleases``; at most every ``LEASE_RETRY`` while none is
granted); once granted, lone tasks go straight to that worker over a
``DirectLane``, two hops instead of three. When the master revokes the lease
because the worker died, the tasks sent under it go through the master again
with one retry less; when it revokes it because the worker is given other
work (``busy``), they are answered as usual; when the worker refuses them (it
does not hold the lease), they go through the master as they are. Either way
the next lone task asks for a new lease. Tasks with options (``client.options``)
always go through the master, which alone places by priority and resources.

Output. With ``on_output`` set, the token ends with a mark that asks the
workers for the tasks' output (``zdf.observe.fnout``); it arrives as
``fn_output`` on the result socket, before the task's result.

Canceling. ``cancel`` takes a task back from the outbox if it is still there;
otherwise it asks the master (``fn_cancel``, a request answered once the
worker holding the task said whether it had started it) and waits for the
answer up to ``timeout``. A task sent to a leased worker is never withdrawn.

Releases (``zdf.client.graph``). A future released or garbage-collected is
queued here (any thread may do it, even the garbage collector in the middle of
a send, so it only appends to a deque). The I/O thread sends them to the master
in batches (``fn_release``), taken before it flushes the outbox, so a release
never overtakes a task submitted before it that takes the future as an input.
A future of a task run under the current lease (and passed to no task) is
dropped by its worker directly: the drop rides on the next task sent to that
worker, or goes through the master after ``RELEASE_DELAY``. A batch goes at
once when ``RELEASE_BATCH`` are waiting, else within ``RELEASE_DELAY`` while
the client is active, at most ``IDLE_POLL_MS`` when it is idle.

Session (``zdf.master.fnsessions``). The I/O thread sends ``fn_alive`` every
``keepalive`` seconds (the master's ``fn_client`` answer names the interval) and
``close`` says ``fn_bye`` (waiting up to ``BYE_TIMEOUT``): the master drops the
results of a client that said goodbye at once, and of one silent for its
``client-grace``, so a client that vanishes leaves nothing on the workers.

Master failover. While tasks are in flight the I/O thread keeps an eye on the
master: when it has heard nothing from it for ``PROBE_INTERVAL`` it pings it.
A ping unanswered for ``MASTER_SILENCE``, an answer from a standby, or one
from another incarnation (a new leader or a restarted master: the ``epoch``
changed) means the master lost the tasks it queued. The client then finds the
leader among the addresses it was given and submits again every task it has
no answer for (it keeps each one's frames until then). A task can thus run
twice — the client keeps the first answer. With no leader to be found for
``timeout`` seconds, the pending futures fail instead of waiting forever.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from zdf import protocol as P
from zdf.client import bigput
from zdf.client.lane import DirectLane, Outgoing, task_message
from zdf.errors import ProtocolError, Timeout, ZdfError, from_wire, worker_lost
from zdf.observe import fnout
from zdf.wire import bigmsg
from zdf.wire.codec import Kind, decode, encode
from zdf.wire.payload import pack
from zdf.wire.rpc import RpcClient
from zdf.wire.security import EXECUTORS
from zdf.wire.sockets import close_socket, endpoint, make_socket, recv_parts

log = logging.getLogger(__name__)

MAX_BATCH = 512
MAX_READ = 1024
WAIT_SLICE_MS = 5  # a thread reading its own result also checks for answers via the master
IDLE_POLL_MS = 1000
LONE_FALLBACK_MS = 10  # results of a lone task whose caller does not call result()
PROBE_INTERVAL = 0.5  # ping a master this silent while tasks are in flight
MASTER_SILENCE = 1.5  # an unanswered ping this old: look for the leader
LEASE_RETRY = 0.5  # a lease asked for and not granted: ask again after this long
RELEASE_BATCH = 512  # released futures that make the I/O thread send them at once
RELEASE_DELAY = 0.05  # the longest a release waits while the client is active
BYE_TIMEOUT = 1.0  # a closing client waits this long for the master to take its goodbye
# Messages the result socket takes ahead of this process reading them: beyond it the
# workers' PUSHes hold them (they never drop), so a big result's chunks wait in its
# worker rather than in this client's memory, and its window there stalls meanwhile.
RESULTS_RCVHWM = 4
RESULT_TRANSFERS = 4096  # big results under way at once, from all workers together
LANE_FINISH = 30.0  # a lane given up while a big task is in chunks: sent to the end for this

ResultsHandler = Callable[[Any, list[Any]], None]  # (results header, frames); ProtocolError
OutputHandler = Callable[[Any], None]  # a task's forwarded output (zdf.observe.fnout)
LostHandler = Callable[[ZdfError], None]  # every task in flight is lost for good


class Transport:
    def __init__(
        self,
        master_addr: str,
        on_results: ResultsHandler,
        *,
        direct_results: bool = True,
        timeout: float = 10.0,
        endpoints: list[str] | None = None,
        on_lost: LostHandler | None = None,
        on_output: OutputHandler | None = None,
    ) -> None:
        self.master_addr = master_addr
        self.on_output = on_output  # None: the workers are not asked for tasks' output
        self.endpoints = endpoints or [master_addr]
        self.on_results = on_results
        self.on_lost = on_lost
        self.failovers = 0  # times the tasks in flight were submitted to a new master
        self._sent: dict[int, Outgoing] = {}  # sent, not answered: what a failover resends
        self._incarnation: tuple[Any, Any] | None = None  # (master name, epoch)
        self._last_heard = time.monotonic()
        self._silence_told = False  # "master silent" was logged for the silence now
        self._probe_rid: int | None = None
        self._probe_sent = 0.0
        self._rids = itertools.count(3)
        self.timeout = timeout
        self.identity = b"c-" + uuid.uuid4().bytes
        self.reply_addr = ""
        self.dropped = 0  # messages dropped on arrival (malformed, or not from a worker)
        self.closed = False
        self._token = os.urandom(8).hex() + (fnout.OUTPUT_MARK if on_output else "")
        self._outbox: deque[Outgoing] = deque()
        self._calls: dict[int, list[Any]] = {}  # rid: [event, reply body, error]
        # Re-entrant: a future's callbacks run in the thread that read its result, with
        # the socket's lock held, and may submit or wait for other tasks.
        self._send_lock = threading.RLock()  # the DEALER to the master: sends and receives
        self._recv_lock = threading.RLock()  # the result PULL
        self._lone: int | None = None  # the one task in flight, sent by its caller
        self._lane: DirectLane | None = None  # a lease on a worker, for lone tasks
        self._lease_asked = 0.0  # when a lone task last asked for a lease (0: ask at once)
        self._io_waits_for_results = False  # the I/O thread found the results socket taken
        self._releases: deque[int] = deque()  # released futures' task ids, for the master
        self._leased_releases: deque[list[Any]] = deque()  # [tid, lease, worker]
        # Values of any size (``zdf.wire.bigmsg``): big messages leave in chunks, paced
        # by the I/O thread (under ``_send_lock``); each socket rebuilds its own.
        self._big = bigmsg.BigSender(bigmsg.send_tracked)
        self._closing_lanes: list[tuple[DirectLane, float]] = []  # finishing a big task
        self._sock = make_socket(
            zmq.DEALER,
            connect=master_addr,
            identity=self.identity,
            sndhwm=0,
            rcvhwm=0,
            server_role="master",
        )
        self._results: zmq.Socket[bytes] | None = None
        try:
            if direct_results:
                self._results = make_socket(
                    zmq.PULL,
                    bind=f"tcp://{reply_host(master_addr)}:*",
                    rcvhwm=RESULTS_RCVHWM,  # the workers queue (never drop) beyond it
                    allow=EXECUTORS,
                )
                self.reply_addr = self._results.getsockopt_string(zmq.LAST_ENDPOINT)
            self.hello = self._hello()
            # Sessions (zdf.master.fnsessions): our results stay while we say we are here.
            alive = self.hello.get("keepalive")
            self.keepalive = float(alive) if isinstance(alive, int | float) and alive > 0 else 0.0
            self._alive_sent = time.monotonic()
            limit = self.hello.get("max_value_bytes")
            self.max_value_bytes = (
                limit if isinstance(limit, int) else bigmsg.DEFAULT_MAX_VALUE_BYTES
            )
            # A PULL does not say which worker a chunk is from: the transfers of every
            # worker (at most two each) count as one peer's; the answers are bounded
            # by this client's own tasks anyway.
            self._big_in = {
                id(sock): bigmsg.BigReceiver(self.max_value_bytes, max_transfers=RESULT_TRANSFERS)
                for sock in (self._sock, self._results)
            }
        except BaseException:
            close_socket(self._sock)
            close_socket(self._results)
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sleeping = threading.Event()
        self._thread = threading.Thread(target=self._io_loop, name="zdf-client-io", daemon=True)
        self._thread.start()

    def _hello(self) -> dict[str, Any]:
        """Ask the master (before the I/O thread owns the socket) what it accepts, and
        which incarnation of it this is."""
        self._sock.send(encode(Kind.REQUEST, P.FN_CLIENT, 1, {}))
        self._sock.send(encode(Kind.REQUEST, P.PING, 2, {}))
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0 and len(answers) < 2:
            if not self._sock.poll(max(1, int(remaining * 1000))):
                continue
            try:
                msg = decode(self._sock.recv())
            except ProtocolError:
                continue
            if msg.rid not in (1, 2):
                continue
            if msg.kind is Kind.ERROR or not isinstance(msg.body, dict):
                raise ZdfError(f"master at {self.master_addr} refused the client: {msg.body}")
            answers[msg.rid] = msg.body
        if len(answers) < 2:
            raise ZdfError(f"master at {self.master_addr} did not answer within {self.timeout} s")
        self._incarnation = _incarnation(answers[2])
        return answers[1]

    # -- sending ------------------------------------------------------------
    def send(self, task: Outgoing, nothing_in_flight: bool) -> tuple[str, str] | None:
        """Send at once from this thread when nothing else is in flight, else batch;
        ``(lease, worker)`` if it went to a leased worker."""
        leased = None
        with self._send_lock:
            lone = nothing_in_flight and not self._outbox
            if lone:
                self._lone = task[0]
                if self._lane is not None and not task[4]:
                    self._sent[task[0]] = task
                    self._lane.send(task, self._reply(), self._big)
                    leased = (self._lane.lease, self._lane.addr)
                else:
                    now = time.monotonic()
                    ask = bool(self.reply_addr) and (
                        not self._lease_asked or now - self._lease_asked > LEASE_RETRY
                    )
                    if ask:
                        self._lease_asked = now
                    self._send_tasks([task], lease=ask)
            else:
                self._lone = None
                self._outbox.append(task)
        if not lone or self._big.busy:  # chunks to pace: the I/O thread does it
            self._wake()
        return leased

    def release(self, tid: int, lease: tuple[str, str] | None, shared: bool) -> None:
        """A future is released (see the module docstring); safe from any thread."""
        if lease is None:
            self._releases.append(tid)
            if len(self._releases) >= RELEASE_BATCH:
                self._wake()
            return
        lane = self._lane
        if not shared and lane is not None and lane.lease == lease[0]:
            lane.drop(f"{lease[0]}:{tid}", tid)
        else:
            self._leased_releases.append([tid, *lease])

    def put(self, addr: str, values: list[tuple[str, list[Any]]]) -> None:
        """Hand scattered values to the worker at ``addr`` (its direct port); waits
        until it confirms it keeps them. Values of any size (``zdf.client.bigput``)."""
        bigput.put_values(addr, values)

    def _flush_releases(self) -> None:
        """Send what was released (taken before the outbox is flushed: see above)."""
        tids: list[int] = []
        while self._releases:
            tids.append(self._releases.popleft())
        leased: list[list[Any]] = []
        while self._leased_releases:
            leased.append(self._leased_releases.popleft())
        lane = self._lane
        if lane is not None:
            leased.extend(lane.stale_drops(RELEASE_DELAY))
        self._flush()
        if tids or leased:
            with self._send_lock:
                body = {"tids": tids, "leased": leased}
                self._sock.send(encode(Kind.EVENT, P.FN_RELEASE, 0, body))

    @property
    def releasing(self) -> bool:
        lane = self._lane
        return bool(self._releases or self._leased_releases or (lane is not None and lane.drops))

    def cancel(self, tid: int) -> bool:
        """Withdraw ``tid`` if it has not started; True if it never runs."""
        with self._send_lock:
            for index, task in enumerate(self._outbox):
                if task[0] == tid:
                    del self._outbox[index]
                    self.forget(tid)
                    return True
            lane = self._lane
            if tid not in self._sent or (lane is not None and tid in lane.tids):
                return False  # answered, or sent straight to a worker that runs it
        if threading.current_thread() is self._thread:
            return False  # a callback: the answer would come on this very thread
        try:
            answer = self.request(P.FN_CANCEL, {"tids": [tid]})
        except ZdfError:
            return False  # no answer: it may run
        canceled = isinstance(answer, dict) and tid in (answer.get("canceled") or [])
        if canceled:
            self.forget(tid)
        return canceled

    def request(self, op: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        """One request to the master, answered through the I/O thread; waits up to
        ``timeout`` (the client's, by default)."""
        timeout = self.timeout if timeout is None else timeout
        event = threading.Event()
        with self._send_lock:
            rid = next(self._rids)
            self._calls[rid] = [event, None, None]
            self._sock.send(encode(Kind.REQUEST, op, rid, body))
        self._wake()
        try:
            if not event.wait(timeout):
                raise Timeout(f"the master did not answer {op} within {timeout} s")
            _, answer, error = self._calls[rid]
        finally:
            self._calls.pop(rid, None)
        if error is not None:
            raise from_wire(error)
        return answer

    def forget(self, tid: int) -> None:
        """``tid`` is answered or canceled."""
        self._sent.pop(tid, None)
        lane = self._lane
        if lane is not None:
            lane.tids.discard(tid)
        if self._lone == tid:
            self._lone = None

    def close(self) -> None:
        if self.closed:
            return
        if self.keepalive and self._probe_rid is None:  # not while the master is silent
            try:
                self.request(P.FN_BYE, {}, timeout=BYE_TIMEOUT)  # our results can go now
            except ZdfError:
                pass  # they go after the master's client-grace instead
        self.closed = True
        self._wake()
        self._thread.join(5)
        # A thread still reading its result lets go within a wait slice.
        locked = self._recv_lock.acquire(timeout=1)
        with self._send_lock:
            self._drop_lane()
            for lane, _ in self._closing_lanes:
                lane.close()
        close_socket(self._sock)
        close_socket(self._results)
        if locked:
            self._recv_lock.release()
        self._wake_r.close()
        self._wake_w.close()

    # -- receiving ----------------------------------------------------------
    def wait_here(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Called by ``Future.result``: read results in this thread until ``done()``,
        if no other thread is reading them (else the caller waits as usual)."""
        if threading.current_thread() is self._thread:
            raise ZdfError(
                "a callback waited for another task on the client's I/O thread, which would "
                "never read its result: chain it with add_done_callback instead of blocking"
            )
        sock = self._results
        if sock is None:
            return
        if not self._recv_lock.acquire(blocking=False):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not done() and not self.closed:
                slice_ms = WAIT_SLICE_MS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    slice_ms = min(slice_ms, max(1, int(left * 1000)))
                # In slices: the answer may also come through the master (the I/O thread).
                if sock.poll(slice_ms, zmq.POLLIN):
                    self._receive(sock)
        finally:
            self._recv_lock.release()
            if self._io_waits_for_results:
                self._io_waits_for_results = False
                self._wake()

    def attend(self, tid: int) -> None:
        """Someone will wait for ``tid`` without reading results: the I/O thread must."""
        if self._lone == tid:
            self._lone = None
            self._wake()

    def _io_loop(self) -> None:
        # Raw descriptors, so that polling never touches a socket another thread may be
        # using. They are edge-triggered: after any wake-up, read until EAGAIN.
        master_fd = self._sock.getsockopt(zmq.FD)
        results_fd = self._results.getsockopt(zmq.FD) if self._results is not None else None
        wake_fd = self._wake_r.fileno()
        poller = zmq.Poller()
        poller.register(master_fd, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        watching = False  # results_fd registered
        more = True
        timed_out = False
        while not self.closed:
            self._flush_releases()
            chunking = self._pump_chunks()
            want = False
            if more:
                more = self._drain(self._sock, self._send_lock)
            if self._results is not None and (more or timed_out or self._lone is None):
                # A lone task's caller reads its own result; the fallback poll covers a
                # caller that never does.
                if self._drain(self._results, self._recv_lock):
                    more = True
                want = self._lone is None and not self._io_waits_for_results
            if results_fd is not None and want != watching:
                if want:
                    poller.register(results_fd, zmq.POLLIN)
                else:
                    poller.unregister(results_fd)
                watching = want
            self._sleeping.set()
            # Checked after announcing sleep: whoever changes these afterwards wakes us.
            handed_back = (
                results_fd is not None
                and not watching
                and self._lone is None
                and not self._io_waits_for_results
            )
            if self._outbox or handed_back:
                self._sleeping.clear()
                more = True
                continue
            if more:
                timeout = 0
            elif self._lone is not None and not self._io_waits_for_results:
                timeout = LONE_FALLBACK_MS
            else:
                timeout = IDLE_POLL_MS
            if self._sent:
                timeout = min(timeout, int(PROBE_INTERVAL * 1000))
            if self.releasing:
                timeout = min(timeout, int(RELEASE_DELAY * 1000))
            if chunking:
                timeout = min(timeout, max(1, int(bigmsg.PUMP_INTERVAL * 1000)))
            if self.keepalive:
                timeout = min(timeout, max(1, int(self.keepalive * 1000)))
            events = poller.poll(timeout)
            self._sleeping.clear()
            timed_out = not events
            for fd, _ in events:
                if fd == wake_fd:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
            more = True  # something may have changed: read (cheap when nothing is there)
            self._watch_master()
            self._keep_alive()

    def _drain(self, sock: zmq.Socket[bytes], lock: threading.RLock) -> bool:
        """Read what is there if no other thread holds the socket; True when more may be."""
        results = sock is self._results
        if results:
            # Raised before trying, so that a holder letting go meanwhile sees it and
            # wakes us: no wake-up is lost, and we need not poll while it reads.
            self._io_waits_for_results = True
        if not lock.acquire(blocking=False):
            return False
        if results:
            self._io_waits_for_results = False
        try:
            return self._receive(sock)
        finally:
            lock.release()

    def _pump_chunks(self) -> bool:
        """Send the chunks of big messages the windows allow; True while any wait."""
        if not self._big.busy:
            return False
        with self._send_lock:
            busy = self._big.pump()
            if self._closing_lanes:
                now = time.monotonic()
                for lane, deadline in list(self._closing_lanes):
                    if now > deadline or not self._big.sending_to(lane.sock):
                        self._closing_lanes.remove((lane, deadline))
                        self._big.drop(lane.sock)
                        lane.close()
            return busy

    def _flush(self) -> None:
        while self._outbox:
            with self._send_lock:
                batch = [self._outbox.popleft() for _ in range(min(MAX_BATCH, len(self._outbox)))]
                self._send_tasks(batch)

    def _reply(self) -> str:
        return f"{self.reply_addr}#{self._token}" if self.reply_addr else ""

    def _send_tasks(self, batch: list[Outgoing], lease: bool = False) -> None:
        """One ``fn_submit`` (asking for a lease); the caller holds ``_send_lock``."""
        for task in batch:
            self._sent[task[0]] = task
        body: dict[str, Any] = {"reply": self._reply()}
        if lease:
            body["lease"] = True
        for part in bigmsg.split_batch(batch, lambda task: task[3]):  # a big value goes alone
            message = task_message(P.FN_SUBMIT, list(part), body)
            if bigmsg.is_big(message):
                self._big.send(self._sock, message)
            else:
                self._sock.send_multipart(message, copy=False)

    def _receive(self, sock: zmq.Socket[bytes]) -> bool:
        """Read up to a bound of messages; True if the bound was hit (more may wait)."""
        for _ in range(MAX_READ):
            try:
                parts = recv_parts(sock, bigmsg.CHUNK_PREFIX)
            except zmq.Again:
                return False
            try:
                msg = decode(parts[0])
                if msg.op == bigmsg.CHUNK and msg.kind is Kind.EVENT:
                    whole = self._big_in[id(sock)].feed(None, msg.body, parts[1:])
                    if whole is None:
                        continue
                    parts = whole
                    msg = decode(parts[0])
                if sock is self._sock:
                    self._last_heard = time.monotonic()
                    if msg.kind is Kind.REPLY and msg.rid == self._probe_rid:
                        self._on_probe(msg.body)
                        continue
                    call = self._calls.get(msg.rid) if msg.kind is not Kind.EVENT else None
                    if call is not None:
                        call[1 if msg.kind is Kind.REPLY else 2] = msg.body
                        call[0].set()
                        continue
                    if msg.op == P.FN_LEASE:
                        self._on_lease(msg.body)
                        continue
                    if msg.op == P.FN_REVOKE:
                        self._on_revoke(msg.body)
                        continue
                if msg.op == P.FN_RESULT and isinstance(msg.body, dict):
                    if sock is self._results and msg.body.get("token") != self._token:
                        raise ProtocolError("a result without this client's token")
                    self.on_results(msg.body.get("results"), parts[1:])
                elif msg.op == P.FN_REFUSED and sock is self._results:
                    if not isinstance(msg.body, dict) or msg.body.get("token") != self._token:
                        raise ProtocolError("a refusal without this client's token")
                    self._on_refused(msg.body.get("tids"))
                elif msg.op == P.FN_OUTPUT and sock is self._results:
                    if not isinstance(msg.body, dict) or msg.body.get("token") != self._token:
                        raise ProtocolError("task output without this client's token")
                    if self.on_output is not None:
                        self.on_output(msg.body)
                elif msg.kind is Kind.ERROR:
                    log.warning("master refused a request: %s", msg.body)
            except ProtocolError as exc:
                self.dropped += 1
                log.debug("dropped a message: %s", exc)
        return True

    # -- leases -------------------------------------------------------------------
    @property
    def leased_worker(self) -> str | None:
        """The address of the worker this client's lone tasks go to (None: the master)."""
        lane = self._lane
        return lane.addr if lane is not None else None

    def _on_lease(self, body: Any) -> None:
        grant = P.fields(body, lease=str, addr=str)
        with self._send_lock:
            self._drop_lane(finish=True)
            if not self.closed:
                self._lane = DirectLane(grant["lease"], grant["addr"])

    def _on_revoke(self, body: Any) -> None:
        """The lease is over. The worker died: what it had goes through the master, one
        retry less. It is given other work (``busy``): what it had is answered as usual."""
        lease = P.fields(body, lease=str)["lease"]
        with self._send_lock:
            if self._lane is None or self._lane.lease != lease:
                return
            tids = self._drop_lane(finish=bool(body.get("busy")))
            self._lease_asked = 0.0
            if body.get("busy"):
                return
            lost = []
            for tid in sorted(tids):
                task = self._sent.get(tid)
                if task is None:
                    continue
                tid, path, retries, frames, options = task
                if retries > 0:
                    self._outbox.append((tid, path, retries - 1, frames, options))
                else:
                    lost.append(tid)
        self._wake()
        error = pack(worker_lost("the leased worker died running it"))
        for tid in lost:
            self.on_results([[tid, False, len(error)]], error)

    def _on_refused(self, tids: Any) -> None:
        """The worker holds no such lease (any more): through the master, as they are."""
        if not isinstance(tids, list):
            raise ProtocolError("fn_refused: tids is not a list")
        with self._send_lock:
            self._drop_lane()
            self._lease_asked = 0.0
            for tid in tids:
                task = self._sent.get(tid) if isinstance(tid, int) else None
                if task is not None:
                    self._outbox.append(task)
        self._wake()

    def _drop_lane(self, finish: bool = False) -> set[int]:
        """Close the lane (the caller holds ``_send_lock``); the tasks it carried.
        ``finish``: its worker is alive and answers what it was sent, so a big task
        still in chunks is sent to the end first (for up to ``LANE_FINISH``)."""
        lane, self._lane = self._lane, None
        if lane is None:
            return set()
        self._leased_releases.extend(lane.stale_drops(0.0))
        if finish and self._big.sending_to(lane.sock):
            self._closing_lanes.append((lane, time.monotonic() + LANE_FINISH))
        else:
            self._big.drop(lane.sock)  # what it had is sent again whole
            lane.close()
        return lane.tids

    # -- master failover (I/O thread) ----------------------------------------
    def _watch_master(self) -> None:
        if not self._sent or self.closed:
            self._probe_rid = None
            return
        now = time.monotonic()
        if self._probe_rid is not None:
            if now - self._last_heard > self.timeout + MASTER_SILENCE:
                self._give_up(ZdfError(f"no master answered for {self.timeout:.0f}s"))
            elif now - self._probe_sent > MASTER_SILENCE:
                # Once per silence (the search goes on every MASTER_SILENCE, quietly).
                level = logging.DEBUG if self._silence_told else logging.WARNING
                self._silence_told = True
                silent = now - self._last_heard
                log.log(level, "master at %s silent for %.1fs", self.master_addr, silent)
                self._fail_over()
        elif now - self._last_heard >= PROBE_INTERVAL:
            self._probe()

    def _keep_alive(self) -> None:
        """Tell the master we are here, every ``keepalive`` seconds (I/O thread)."""
        now = time.monotonic()
        if self.keepalive and now - self._alive_sent >= self.keepalive and not self.closed:
            self._alive_sent = now
            with self._send_lock:
                self._sock.send(encode(Kind.EVENT, P.FN_ALIVE, 0, {}))

    def _probe(self) -> None:
        """Ask the master who it is and whether it leads (answered in ``_on_probe``)."""
        with self._send_lock:
            self._probe_rid = next(self._rids)
            self._probe_sent = time.monotonic()
            self._sock.send(encode(Kind.REQUEST, P.PING, self._probe_rid, {}))

    def _on_probe(self, body: Any) -> None:
        self._probe_rid = None
        self._silence_told = False
        if not isinstance(body, dict):
            return
        if not body.get("leading"):
            self._fail_over()
            return
        incarnation = _incarnation(body)
        if incarnation != self._incarnation:
            # A new leader, or the master restarted: it knows none of our tasks.
            self._incarnation = incarnation
            with self._send_lock:
                self._drop_lane()  # granted by a master that is gone
                self._big.drop(self._sock)  # chunks of tasks it will get again whole
                self._lease_asked = 0.0
                # Ahead of anything not sent yet: the I/O loop's next flush sends them.
                tasks = list(self._sent.values())
                self._outbox.extendleft(reversed(tasks))
            self.failovers += 1
            log.warning("%d tasks in flight submitted again to %s", len(tasks), self.master_addr)

    def _fail_over(self) -> None:
        """Find the leading master and ask it who it is (``_on_probe`` goes on)."""
        self._probe_rid = None
        try:
            addr = find_leader(self.endpoints, self.timeout)
        except ZdfError as exc:
            self._give_up(exc)
            return
        with self._send_lock:
            if addr != self.master_addr:
                try:
                    self._sock.disconnect(endpoint(self.master_addr))
                except zmq.ZMQError:
                    pass
                self._sock.connect(endpoint(addr))
                self.master_addr = addr
        self._probe()

    def _give_up(self, why: ZdfError) -> None:
        self._probe_rid = None
        self._sent.clear()
        self._last_heard = time.monotonic()
        if self.on_lost is not None:
            self.on_lost(ZdfError(f"tasks lost: their master went away and {why.message}"))

    def _wake(self) -> None:
        if self._sleeping.is_set():
            self._sleeping.clear()
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass


def reply_host(master_addr: str) -> str:
    """The address of this host as the master's network sees it (where workers can
    reach the client): the local end of a route to the master."""
    host = endpoint(master_addr).split("://", 1)[1].rpartition(":")[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1", "*", "0.0.0.0"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])


def _incarnation(ping: dict[str, Any]) -> tuple[Any, Any]:
    return ping.get("master"), ping.get("epoch")


def master_endpoints(master_addr: str | list[str]) -> list[str]:
    """``host:port[,host:port...]`` (or a list of them) as a list."""
    parts = master_addr.split(",") if isinstance(master_addr, str) else master_addr
    return [e.strip() for e in parts if e.strip()]


def find_leader(master_addr: str | list[str], timeout: float) -> str:
    """The leading master among ``host:port[,host:port...]`` (the only one when just one)."""
    endpoints = master_endpoints(master_addr)
    if len(endpoints) == 1:
        return endpoints[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for addr in endpoints:
            try:
                with RpcClient(addr, timeout=0.5) as probe:
                    if probe.call(P.PING, retry=False).get("leading"):
                        return addr
            except ZdfError:
                continue
    raise ZdfError(f"no leading master among {', '.join(endpoints)}")
