"""``coordinator``: the DDL barrier's meeting point, and the job's summary.

Theory of operation (the DDL barrier, coordinator side)
-------------------------------------------------------
Sinks report ``arrive (t, v)`` once they have written everything before DDL
(t, v) in their stream. When all streams have arrived, the coordinator sends
``write (t, v)`` to the sink ``BenchParams.writer(t, v)``; when that sink
answers ``written (t, v)``, it sends ``release (t, v)`` to every syncer. Messages
to one peer are gathered and sent as one ``{"pairs": [...]}``
event (flushed at the end of each burst of incoming messages), so a thousand
barriers do not cost a thousand messages per peer.

Peers introduce themselves with ``hello {role, stream}`` on connecting (and again
after a reconnect); anything for a peer not yet known waits for its hello.

When every sink has sent ``sink-done`` with its figures, the coordinator merges
them (sums, and the latency histograms) into ``<sink-dir>/<flow-id>/summary.json``
— the one summary for the whole job — and finishes with it as its summary.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

import zmq

from zdf.errors import ProtocolError
from zdf.runtime.bench.latency import LatencyHistogram
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.bench.sink import sink_summary
from zdf.runtime.operator import Operator
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
        self.arrived: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.writing: set[tuple[int, int]] = set()
        self.completed: set[tuple[int, int]] = set()
        self.peers: dict[tuple[str, int], bytes] = {}
        self.outbox: dict[tuple[str, int], list[list[int]]] = defaultdict(list)
        self.sinks_done: dict[int, dict[str, Any]] = {}
        self._flush_scheduled = False
        sock = make_socket(zmq.ROUTER, bind=self.data_address("coord"))
        handlers = {
            "hello": self._on_hello,
            "arrive": self._on_arrive,
            "written": self._on_written,
            "sink-done": self._on_sink_done,
        }
        guarded = {op: self.guard_handler(h) for op, h in handlers.items()}
        self.channel = Channel(self.ctx.reactor, sock, guarded, name="coordinator")
        # One guarded burst per wake-up, so the replies of a burst go out together.
        self.ctx.reactor.add_reader(sock, self.guard(self.channel._on_readable))
        self.on_close(self.channel.close)
        self.ctx.publish_endpoint("coord", sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # type: ignore[union-attr]

    def snapshot(self) -> dict[str, Any]:
        return {"completed": sorted([t, v] for t, v in self.completed)}

    # -- handlers ------------------------------------------------------------------
    def _on_hello(self, call: Call) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        role, stream = body.get("role"), body.get("stream")
        if role not in ROLES or not isinstance(stream, int) or call.peer is None:
            raise ProtocolError("hello: expected {role: syncer|sink, stream}")
        self.peers[(role, stream)] = call.peer
        if self.outbox.get((role, stream)):
            self._schedule_flush()

    def _on_arrive(self, call: Call) -> None:
        stream, pairs = _pairs(call)
        p = self.bench
        for t, v in pairs:
            if not (0 <= t < p.tables and 1 <= v <= p.versions and 0 <= stream < p.streams):
                raise ProtocolError(f"arrive: no DDL ({t}, {v}) on stream {stream}")
            if (t, v) in self.completed or (t, v) in self.writing:
                continue  # a repeat after a reconnect
            arrived = self.arrived[(t, v)]
            arrived.add(stream)
            if len(arrived) == p.streams:
                del self.arrived[(t, v)]
                self.writing.add((t, v))
                self._send("sink", p.writer(t, v), t, v)

    def _on_written(self, call: Call) -> None:
        _, pairs = _pairs(call)
        for t, v in pairs:
            if (t, v) not in self.writing:
                continue
            self.writing.discard((t, v))
            self.completed.add((t, v))
            for s in range(self.bench.streams):
                self._send("syncer", s, t, v)
        self.progress(barriers=float(len(self.completed)))

    def _on_sink_done(self, call: Call) -> dict[str, Any]:
        body = call.body
        if not isinstance(body, dict) or not isinstance(body.get("stream"), int):
            raise ProtocolError("sink-done: expected {stream, ...}")
        self.sinks_done[body["stream"]] = body
        if len(self.sinks_done) == self.bench.streams:
            self.call_later(0.0, self._finish_job)
        return {"ok": True}

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
            self.channel.notify(op, {"pairs": pairs}, peer=peer)
            del self.outbox[(role, stream)]

    # -- the end -------------------------------------------------------------------
    def _finish_job(self) -> None:
        if len(self.completed) != self.expected:
            self.fail(
                f"all sinks done but {len(self.completed)}/{self.expected} DDL barriers completed"
            )
            return
        reports = list(self.sinks_done.values())
        hist = LatencyHistogram()
        for report in reports:
            hist.merge(LatencyHistogram.from_wire(report.get("hist")))
        firsts = [int(r["first_ts"]) for r in reports if r.get("first_ts")]
        summary = sink_summary(
            sum(int(r.get("records", 0)) for r in reports),
            sum(int(r.get("ddls", 0)) for r in reports),
            min(firsts) if firsts else 0,
            max(int(r.get("last_ts", 0)) for r in reports),
            hist,
        )
        summary["flow_id"] = self.bench.flow_id
        summary["streams"] = self.bench.streams
        summary["tables"] = self.bench.tables
        summary["barriers"] = len(self.completed)
        os.makedirs(self.bench.out_dir, exist_ok=True)
        with open(os.path.join(self.bench.out_dir, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2)
        self.finish(summary)
