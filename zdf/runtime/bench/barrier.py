"""The DDL barrier between the sinks of a job: "arrive" to the writer, "written" back.

Theory of operation
-------------------
Every sink binds a ROUTER ``barrier`` and links (a DEALER ``PeerLink``) to every
other sink's: a ``zdf.dataflow.peers.Peers`` among the instances of the sink task.
DDL (t, v) has one writer, the sink ``BenchParams.writer(t, v)``:

* a sink whose gate (``zdf.runtime.bench.gate``) stops at (t, v) has written
  everything of t before it in its stream; it tells the writer ``arrive (t, v)``
  (the writer counts itself without a message);
* once every stream has arrived, the writer writes the DDL and sends
  ``written (t, v)`` to every other sink, which opens its gate for t.

So a barrier costs two one-way messages on its critical path and no third
party, and the rows it releases are already in the sink (no pipe queue between
the gate and the file). Everything sent to one peer in one burst of callbacks
goes out as one message (``{"stream", "pairs": [[t, v], ...]}``), so many
tables' barriers cost one message per peer, not one each.

Everything a sink says is a fact about its file (rows written), and facts stay
true: a message that comes twice or late is harmless, and so is one from a
zombie (its file stays locked against its replacement until it stops, and what
it wrote stays written), so no fencing is needed. Lost messages are repaired by
saying the facts again:

* whenever a link (re)connects (the peer started, or restarted elsewhere), the
  sink sends it ``hello {stream, attempt, written}`` (per table, the highest DDL
  version known written) and ``arrive`` for every DDL it waits at whose writer
  is that peer: a restarted writer rebuilds its arrivals from them;
* a writer told of an arrival at a DDL already written answers ``written`` at
  once (a replaying sink waits again at a DDL written long ago);
* a sink's done flag is a fact too: a done sink wrote every DDL it is the
  writer of.

The sink drives it: ``arrive(pairs)`` for its stops, ``take()`` for the DDLs it
must write now and the releases it learned, ``announce(pairs)`` once it wrote
DDLs. ``on_change`` is deferred to the end of the burst whenever ``take()``
has something.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from zdf.dataflow.peers import Peers
from zdf.errors import ProtocolError
from zdf.runtime.bench.params import BenchParams
from zdf.runtime.link import PeerLink
from zdf.runtime.operator import DONE
from zdf.wire.rpc import Call

if TYPE_CHECKING:
    from zdf.runtime.operator import Operator

log = logging.getLogger(__name__)

Pair = tuple[int, int]


def parse_pairs(call: Call) -> tuple[int, list[Pair]]:
    """``{stream, pairs: [[table, version], ...]}`` of a barrier message."""
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("pairs"), list):
        raise ProtocolError(f"{call.op}: expected {{stream, pairs}}")
    stream = body.get("stream")
    if not isinstance(stream, int) or isinstance(stream, bool):
        raise ProtocolError(f"{call.op}: stream must be an integer")
    pairs = []
    for pair in body["pairs"]:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)
        ):
            raise ProtocolError(f"{call.op}: a pair must be [table, version]")
        pairs.append((pair[0], pair[1]))
    return stream, pairs


class SinkBarrier:
    """One sink's end of the barrier (see the module docstring)."""

    def __init__(
        self,
        op: Operator,
        params: BenchParams,
        stream: int,
        written: np.ndarray,
        *,
        waiting: Callable[[], list[Pair]],
        on_change: Callable[[], None],
    ) -> None:
        self.op = op
        self.p = params
        self.stream = stream
        self.known = np.asarray(written, dtype=np.int64).copy()  # highest DDL known written
        self.arrived: dict[Pair, set[int]] = defaultdict(set)  # DDLs this sink writes
        self.stats: Counter[str] = Counter()
        self._waiting = waiting
        self._on_change = on_change
        self._ready: list[Pair] = []
        self._learned: dict[int, int] = {}  # table -> version learned written, not yet taken
        self._outbox: dict[tuple[str, int], list[list[int]]] = defaultdict(list)
        self._change_scheduled = False
        handlers = {"hello": self._on_hello, "arrive": self._on_arrive, "written": self._on_written}
        self.peers = Peers(
            op,
            "barrier",
            task="sink",
            instance=stream,
            count=params.streams,
            handlers={name: self._dropping_malformed(h) for name, h in handlers.items()},
            on_connect=self._hello,
        )
        self.channel = self.peers.channel
        self.links: dict[int, PeerLink] = self.peers.links
        for s in self.links:
            op.ctx.resolve_endpoint(
                f"sink-{s}", DONE, op.guard(functools.partial(self._peer_done, s))
            )

    # -- what the sink calls ---------------------------------------------------------
    def arrive(self, pairs: list[Pair]) -> None:
        """This sink's stream has written everything before these DDLs."""
        for t, v in pairs:
            writer = self.p.writer(t, v)
            if writer == self.stream:
                self._count(writer, t, v)
            else:
                self._send("arrive", writer, t, v)

    def take(self) -> tuple[list[Pair], list[Pair]]:
        """(DDLs this sink must write now, ``(table, version)`` learned written)."""
        ready, self._ready = self._ready, []
        learned = list(self._learned.items())
        self._learned.clear()
        return ready, learned

    def announce(self, pairs: list[Pair]) -> None:
        """This sink wrote these DDLs: tell every other sink (now: see ``flush``)."""
        for t, v in pairs:
            self._learn(t, v)
            for s in self.links:
                self._send("written", s, t, v)
        self.flush()

    def flush(self) -> None:
        """Send what is queued now rather than at the end of the burst.

        The sink calls it once a step's messages are all queued: they are on the
        barrier's critical path, and the rest of the burst (its own release,
        taking more input) must not delay them."""
        if self._outbox:
            self._flush()

    # -- handlers --------------------------------------------------------------------
    def _dropping_malformed(self, handler: Callable[[Call], None]) -> Callable[[Call], None]:
        """A malformed message is dropped and counted; it never fails the sink."""

        def handle(call: Call) -> None:
            try:
                handler(call)
            except ProtocolError as exc:
                self.stats["malformed"] += 1
                log.warning("sink-%d barrier: dropped %s: %s", self.stream, call.op, exc)

        return handle

    def _on_hello(self, call: Call) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        written = body.get("written")
        if not isinstance(written, list) or len(written) != self.p.tables:
            raise ProtocolError("hello: expected {stream, attempt, written: [per table]}")
        for t, v in enumerate(written):
            if isinstance(v, int) and v > 0:
                self._learn(t, min(v, self.p.versions))

    def _on_arrive(self, call: Call) -> None:
        stream, pairs = parse_pairs(call)
        p = self.p
        if not 0 <= stream < p.streams:
            raise ProtocolError(f"arrive: no stream {stream}")
        for t, v in pairs:
            if not (0 <= t < p.tables and 1 <= v <= p.versions) or p.writer(t, v) != self.stream:
                raise ProtocolError(f"arrive: sink {self.stream} is not the writer of ({t}, {v})")
            self._count(stream, t, v)
        self.stats["arrive"] += 1

    def _on_written(self, call: Call) -> None:
        _, pairs = parse_pairs(call)
        for t, v in pairs:
            if 0 <= t < self.p.tables and 1 <= v <= self.p.versions:
                self._learn(t, v)
        self.stats["written"] += 1

    def _peer_done(self, stream: int, _flag: str = "") -> None:
        p = self.p
        for t in range(p.tables):  # a done sink wrote every DDL it is the writer of
            top = p.last_written_by(stream, t)
            if top >= 1:
                self._learn(t, top)

    # -- state -----------------------------------------------------------------------
    def _count(self, stream: int, t: int, v: int) -> None:
        if v <= self.known[t]:  # it waits at a DDL already written (a replay)
            if stream != self.stream:
                self._send("written", stream, t, int(self.known[t]))
            else:
                self._learned[t] = int(self.known[t])
                self._changed()
            return
        arrived = self.arrived[(t, v)]
        arrived.add(stream)
        if len(arrived) == self.p.streams:
            del self.arrived[(t, v)]
            self._ready.append((t, v))
            self._changed()

    def _learn(self, t: int, v: int) -> None:
        if v <= self.known[t]:
            return
        self.known[t] = v
        self._learned[t] = v
        for key in [k for k in self.arrived if k[0] == t and k[1] <= v]:
            del self.arrived[key]
        self._changed()

    def _changed(self) -> None:
        if not self._change_scheduled:
            self._change_scheduled = True
            self.op.defer(self._run_change)

    def _run_change(self) -> None:
        self._change_scheduled = False
        self._on_change()

    # -- sending ---------------------------------------------------------------------
    def _hello(self, stream: int, link: PeerLink) -> None:
        link.notify(
            "hello",
            {"stream": self.stream, "attempt": self.op.ctx.attempt, "written": self.known.tolist()},
        )
        pairs = [[t, v] for t, v in self._waiting() if self.p.writer(t, v) == stream]
        if pairs:
            link.notify("arrive", {"stream": self.stream, "pairs": pairs})

    def _send(self, op: str, stream: int, t: int, v: int) -> None:
        self._outbox[(op, stream)].append([t, v])
        self.op.defer(self._flush)  # at the latest at the end of the burst

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, defaultdict(list)
        for (op, stream), pairs in outbox.items():
            self.links[stream].notify(op, {"stream": self.stream, "pairs": pairs})
            self.stats[f"sent-{op}"] += 1
