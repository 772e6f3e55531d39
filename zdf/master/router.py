"""The master's ROUTER: how much it queues for one peer, and what happens beyond.

A ROUTER at its send high-water mark for a peer drops what it is given for that
peer, without an error (libzmq's default, with a mark of 1,000 messages). The
master sends bursts to one peer: a start command per task of a 1,000-table job
to one executor, an endpoint update per published address and done flag to every
executor of a job, function tasks and their results. A command dropped that way
is never answered and its task waits forever. So the master's ROUTER:

* queues up to ``SNDHWM`` messages per peer (a hundred times the default: the
  largest burst a job sends one executor is a message or two per task, and a job
  has at most a few thousand tasks per executor), a bound that still keeps a
  client that never reads from growing the master's memory without end;
* is ``ROUTER_MANDATORY``: a message it cannot queue (that peer's mark reached,
  or a peer that is gone) fails its send instead of vanishing. ``Channel.send``
  counts it (``send_dropped``, ``send_failed``) and returns False; a request
  that could not be sent completes at once with an error marked ``unsent``, so
  its sender can send it again (the master resends a start command) instead of
  waiting for a reply that cannot come.
"""

from __future__ import annotations

import zmq

from zdf.wire.sockets import make_socket

SNDHWM = 100_000
"""Messages the master queues for one peer before a send to it fails."""


def master_router(addr: str, sndhwm: int = SNDHWM) -> zmq.Socket[bytes]:
    """The master's bound ROUTER (see the module docstring)."""
    sock = make_socket(zmq.ROUTER, bind=addr, sndhwm=sndhwm)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock
