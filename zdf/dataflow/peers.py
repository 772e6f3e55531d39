"""``Peers``: control messages among the instances of one task, beside its data streams.

Theory of operation
-------------------
What the step model aligns by itself is a task's inputs; what it does not is the
instances of one task with each other (sinks agreeing that a DDL has reached every
stream before one of them writes it, say). For that, every instance binds a ROUTER
published as the endpoint ``name`` and links (a DEALER ``PeerLink``) to every other
instance's, found again through the endpoint directory whenever one restarts
elsewhere. ``send(j, op, body)`` sends a msgpack event to instance ``j``; a handler
per ``op`` gets it (``call.op``, ``call.body``). Sends to a peer not connected yet
are queued on its link; ``on_connect(j, link)`` runs whenever the link to ``j``
(re)connects (maybe before the constructor returns: it sends on ``link``), which is
where an instance says again what a restarted peer must know: messages are not
durable, facts said again on every connect are.

Instances of one worker process skip the kernel (``zdf.wire.inproc``). A message a
handler cannot parse should raise ``zdf.errors.ProtocolError`` and be dropped by
the handler's owner; any other exception fails the task, as in every callback.

``FlowOperator.peers`` makes one for a dataflow task (its name, instance and
parallelism); the benchmark's sinks settle their DDL barrier over one
(``zdf.runtime.bench.barrier``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import zmq

from zdf.runtime.link import PeerLink
from zdf.wire import inproc
from zdf.wire.rpc import Call, Channel
from zdf.wire.security import EXECUTORS
from zdf.wire.sockets import make_socket

if TYPE_CHECKING:
    from zdf.runtime.operator import Operator

Handler = Callable[[Call], None]


class Peers:
    """Instance ``instance`` of task ``task`` (``count`` instances) and its links to the others."""

    def __init__(
        self,
        op: Operator,
        name: str,
        *,
        task: str,
        instance: int,
        count: int,
        handlers: Mapping[str, Handler],
        on_connect: Callable[[int, PeerLink], None] | None = None,
    ) -> None:
        self.instance = instance
        sock = make_socket(zmq.ROUTER, bind=op.data_address(name), allow=EXECUTORS)
        guarded = {kind: op.guard_handler(handler) for kind, handler in handlers.items()}
        self.channel = Channel(op.ctx.reactor, sock, guarded, name=f"{task}-{instance}.{name}")
        # One guarded burst per wake-up, so what it learns is acted on (and sent) once.
        op.ctx.reactor.add_reader(sock, op.guard(self.channel._on_readable))
        op.on_close(lambda: self.channel.close(op.linger))
        addr = inproc.bind_alias(sock)
        op.on_close(lambda: inproc.drop_alias(addr))
        op.ctx.publish_endpoint(name, addr)
        self.links: dict[int, PeerLink] = {}
        for j in range(count):
            if j != instance:
                connected = None if on_connect is None else functools.partial(on_connect, j)
                self.links[j] = op.link(f"{task}-{j}", name, {}, on_connect=connected)

    def send(self, instance: int, op: str, body: object) -> None:
        """An event to ``instance`` (queued on its link until it is connected)."""
        self.links[instance].notify(op, body)
