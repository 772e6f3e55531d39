"""``coordinator``: the DDL barrier's meeting point, and the job's summary.

Theory of operation (the DDL barrier, coordinator side)
-------------------------------------------------------
Sinks report ``arrive (t, v)`` once they have written everything before DDL
(t, v) in their stream. When all streams have arrived, the coordinator sends
``write (t, v)`` to the sink ``BenchParams.writer(t, v)``; when that sink
answers ``written (t, v)``, it sends ``release (t, v)`` to every syncer. Messages
to one peer are gathered and sent as one ``{"pairs": [...]}`` event (flushed at
the end of each burst of incoming messages), so a thousand barriers do not cost
a thousand messages per peer.

Failover: the coordinator keeps nothing that must survive; its state is rebuilt
from the sinks, which own the facts.

* ``written[t]`` is the highest version of table t known to be written (DDLs of
  a table are written in order, so that is all of them up to it). It rises with
  ``written`` reports and with the ``written`` list a sink sends in its
  ``hello`` (what is in its file), and with a sink's done flag (a done sink
  wrote every DDL it is the writer of: it holds each one from its arrival).
* An ``arrive`` for a DDL at or below ``written[t]`` (a replaying syncer waits
  at it again) is answered at once with a ``release`` to that stream's syncer.
* Sinks re-send their open arrivals when they connect, and ``write`` requests
  still unanswered are sent again to a writer that (re)connects; a writer asked
  for a DDL already in its file answers ``written`` without writing it.

Fencing: peers introduce themselves with ``hello {role, stream, attempt}``; a
hello from an older attempt than the one registered is ignored, and so is any
other message from a socket that is not the registered one for its stream. A
zombie sink (still running after its executor was declared dead) is thus cut
off as soon as its replacement says hello.

When every sink has raised its done flag, the coordinator merges their
``summary_<s>.json`` (sums, and the latency histograms) into
``<sink-dir>/<flow-id>/summary.json`` — the one summary for the whole job — and
finishes with it as its summary.
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict

import numpy as np
import zmq

from zdf.errors import ProtocolError
from zdf.runtime.bench.latency import LatencyHistogram
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sink import sink_summary, summary_path
from zdf.runtime.operator import DONE, Operator
from zdf.wire.rpc import Call, Channel
from zdf.wire.sockets import make_socket

ROLES = ("syncer", "sink")


def _pairs(call: Call) -> tuple[int, list[tuple[int, int]]]:
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("pairs"), list):
        raise ProtocolError(f"{call.op}: expected {{stream, pairs}}")
    stream = body.get("stream")
    if not isinstance(stream, int):
        raise ProtocolError(f"{call.op}: stream must be an integer")
    pairs = []
    for pair in body["pairs"]:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)
        ):
            raise ProtocolError(f"{call.op}: a pair must be [table, version]")
        pairs.append((pair[0], pair[1]))
    return stream, pairs


class Coordinator(Operator):
    """params: the bench params. Binds ROUTER ``coord``."""

    def open(self) -> None:
        self.bench = p = BenchParams.from_params(self.params)
        self.expected = p.tables * p.versions
        self.written = np.zeros(p.tables, np.int64)
        self.arrived: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.writing: set[tuple[int, int]] = set()
        self.peers: dict[tuple[str, int], tuple[int, bytes]] = {}
        self.outbox: dict[tuple[str, int], list[list[int]]] = defaultdict(list)
        self.sinks_done: set[int] = set()
        self.fenced = 0
        self._flush_scheduled = False
        sock = make_socket(zmq.ROUTER, bind=self.data_address("coord"))
        handlers = {"hello": self._on_hello, "arrive": self._on_arrive, "written": self._on_written}
        guarded = {op: self.guard_handler(h) for op, h in handlers.items()}
        self.channel = Channel(self.ctx.reactor, sock, guarded, name="coordinator")
        # One guarded burst per wake-up, so the replies of a burst go out together.
        self.ctx.reactor.add_reader(sock, self.guard(self.channel._on_readable))
        self.on_close(self.channel.close)
        self.ctx.publish_endpoint("coord", sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]
        for s in range(p.streams):
            on_done = self.guard(functools.partial(self._sink_done, s))
            self.ctx.resolve_endpoint(f"sink-{s}", DONE, on_done)

    @property
    def completed(self) -> int:
        """DDL barriers known complete."""
        return int(self.written.sum())

    # -- handlers ------------------------------------------------------------------
    def _on_hello(self, call: Call) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        role, stream, attempt = body.get("role"), body.get("stream"), body.get("attempt", 0)
        p = self.bench
        if (
            role not in ROLES
            or not isinstance(stream, int)
            or not 0 <= stream < p.streams
            or not isinstance(attempt, int)
            or call.peer is None
        ):
            raise ProtocolError("hello: expected {role: syncer|sink, stream, attempt}")
        known = self.peers.get((role, stream))
        if known is not None and attempt < known[0]:
            self.fenced += 1
            self.log.info("ignored a hello from %s-%d attempt %d (a zombie)", role, stream, attempt)
            return
        self.peers[(role, stream)] = (attempt, call.peer)
        if role == "sink":
            written = body.get("written")
            if isinstance(written, list) and len(written) == p.tables:
                for t, v in enumerate(written):
                    if isinstance(v, int) and v > self.written[t]:
                        self._complete(t, min(v, p.versions))
            for t, v in sorted(self.writing):
                if p.writer(t, v) == stream:  # the request may have died with the last one
                    self._send("sink", stream, t, v)
        if self.outbox.get((role, stream)):
            self._schedule_flush()

    def _current(self, role: str, call: Call) -> int | None:
        """The stream of a message from the registered peer, None from anyone else."""
        stream, _ = _pairs(call)
        known = self.peers.get((role, stream))
        if known is None or known[1] != call.peer:
            self.fenced += 1
            return None
        return stream

    def _on_arrive(self, call: Call) -> None:
        stream = self._current("sink", call)
        if stream is None:
            return
        p = self.bench
        for t, v in _pairs(call)[1]:
            if not (0 <= t < p.tables and 1 <= v <= p.versions):
                raise ProtocolError(f"arrive: no DDL ({t}, {v}) on stream {stream}")
            if v <= self.written[t]:
                self._send("syncer", stream, t, v)  # a replay waits at a written DDL
                continue
            if (t, v) in self.writing:
                continue  # a repeat after a reconnect
            arrived = self.arrived[(t, v)]
            arrived.add(stream)
            if len(arrived) == p.streams:
                del self.arrived[(t, v)]
                self.writing.add((t, v))
                self._send("sink", p.writer(t, v), t, v)

    def _on_written(self, call: Call) -> None:
        if self._current("sink", call) is None:
            return
        p = self.bench
        for t, v in _pairs(call)[1]:
            if 0 <= t < p.tables and 1 <= v <= p.versions:
                self._complete(t, v)
        self.progress(barriers=float(self.completed))

    def _complete(self, t: int, v: int) -> None:
        """DDL (t, v), and so every earlier one of t, is written: release who waits."""
        self.written[t] = max(int(self.written[t]), v)
        top = int(self.written[t])
        self.writing = {(tt, vv) for tt, vv in self.writing if tt != t or vv > top}
        for s in range(self.bench.streams):
            self._send("syncer", s, t, v)
        for key in [k for k in self.arrived if k[0] == t and k[1] <= top]:
            for s in self.arrived.pop(key):
                self._send("syncer", s, *key)

    def _sink_done(self, stream: int, _flag: str = "") -> None:
        self.sinks_done.add(stream)
        p = self.bench
        for t in range(p.tables):  # a done sink wrote every DDL it is the writer of
            top = p.versions - (p.versions - stream + t) % p.streams
            if top >= 1 and self.written[t] < top:
                self._complete(t, top)
        if len(self.sinks_done) == p.streams and not self.done:
            self._finish_job()

    # -- sending -------------------------------------------------------------------
    def _send(self, role: str, stream: int, t: int, v: int) -> None:
        self.outbox[(role, stream)].append([t, v])
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.defer(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for (role, stream), pairs in list(self.outbox.items()):
            peer = self.peers.get((role, stream))
            if peer is None or not pairs:
                continue
            op = "write" if role == "sink" else "release"
            self.channel.notify(op, {"pairs": pairs}, peer=peer[1])
            del self.outbox[(role, stream)]

    # -- the end -------------------------------------------------------------------
    def _finish_job(self) -> None:
        p = self.bench
        reports = []
        for s in range(p.streams):
            with open(summary_path(p, s)) as fh:
                reports.append(json.load(fh))
        ddls = sum(int(r.get("ddls", 0)) for r in reports)
        if ddls != self.expected:
            self.fail(f"all sinks done but {ddls}/{self.expected} DDLs written")
            return
        hist = LatencyHistogram()
        for report in reports:
            hist.merge(LatencyHistogram.from_wire(report.get("hist")))
        firsts = [int(r["first_ts"]) for r in reports if r.get("first_ts")]
        summary = sink_summary(
            sum(int(r.get("records", 0)) for r in reports),
            ddls,
            min(firsts) if firsts else 0,
            max(int(r.get("last_ts", 0)) for r in reports),
            hist,
        )
        summary["flow_id"] = p.flow_id
        summary["streams"] = p.streams
        summary["tables"] = p.tables
        summary["barriers"] = ddls
        os.makedirs(p.out_dir, exist_ok=True)
        with open(os.path.join(p.out_dir, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2)
        self.finish(summary)
