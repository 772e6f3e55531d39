"""The single-replica metastore server: ``zdf metastore --config FILE``.

Theory of operation: one reactor, one ROUTER ``Channel`` at ``addr``. Reads
(get, range, status, lease_ttl) are answered at once from committed state.
Writes are turned into commands and *proposed*: every write that arrives in
one reactor wake-up joins one batch, applied and fsynced as one LevelDB
``WriteBatch`` (group commit) before any of them is acknowledged. Later a
Raft-lite log slots in at ``_propose``/``_flush`` -- the commands already
carry everything (clock, lease ids) that replicas must agree on -- without any
change to the client protocol.

Lease expiry is decided here, by this server's wall clock, and then applied as
a ``lease_expire`` command, so that every replica would delete the same keys.
After a (re)start every lease gets at least its full TTL, as etcd does after
a leader change, so downtime never expires healthy sessions.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from zdf.config import MetastoreConfig
from zdf.errors import LeaseNotFound, ProtocolError, ZdfError
from zdf.metastore.commands import (
    MAX_KEY_BYTES,
    MAX_RANGE_LIMIT,
    Command,
    Compact,
    Delete,
    LeaseExpire,
    LeaseGrant,
    LeaseKeepalive,
    LeaseRevoke,
    Put,
    Txn,
    as_bool,
    as_bytes,
    as_int,
    as_map,
    field,
)
from zdf.metastore.state import MetaState
from zdf.metastore.watch_hub import WatchHub
from zdf.wire.reactor import Reactor, Timer
from zdf.wire.rpc import DEFER, Call, Channel
from zdf.wire.sockets import make_socket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """Tuning that is not (yet) in the config file; the defaults suit a small cluster."""

    max_request_bytes: int = 4 << 20
    """Larger frames make ZeroMQ drop the connection before we ever see them."""
    max_watches: int = 10_000
    watch_progress_interval: float = 0.5
    """Heartbeat to each watcher; a client declares the watch lost after 3 of them."""
    history_retention: int = 100_000
    """Revisions of watch history kept; older ones are compacted automatically."""
    compact_check_interval: float = 10.0
    max_batch: int = 1024
    """At most this many commands in one synced write."""


class MetaServer:
    def __init__(
        self,
        config: MetastoreConfig,
        options: ServerOptions | None = None,
        reactor: Reactor | None = None,
    ) -> None:
        self.config = config
        self.options = options or ServerOptions()
        self.reactor = reactor or Reactor()
        self.state = MetaState(config.data_dir)
        self.started_wall = time.time()
        try:
            sock = make_socket(
                zmq.ROUTER, bind=config.addr, max_message_bytes=self.options.max_request_bytes
            )
        except zmq.ZMQError:
            self.state.close()
            raise
        # Report unroutable peers (gone watchers) instead of dropping silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        handlers: dict[str, Callable[[Call], Any]] = {
            "get": self._get,
            "range": self._range,
            "status": self._status,
            "lease_ttl": self._lease_ttl,
            "put": self._write(Put.from_dict),
            "delete": self._write(Delete.from_dict),
            "txn": self._write(Txn.from_dict),
            "lease_grant": self._write(self._lease_grant),
            "lease_keepalive": self._write(self._lease_keepalive),
            "lease_revoke": self._write(LeaseRevoke.from_dict),
            "compact": self._write(Compact.from_dict),
            "watch": self._watch,
            "watch_cancel": self._watch_cancel,
        }
        handlers = {op: _requests_only(handler) for op, handler in handlers.items()}
        self.channel = Channel(self.reactor, sock, handlers, name=f"metastore {config.name}")
        self.watches = WatchHub(sock, self.state, max_watches=self.options.max_watches)
        self._pending: list[tuple[Call | None, dict[str, Any]]] = []
        self._flush_timer: Timer | None = None
        self._expiring: set[int] = set()
        self.stats: Counter[str] = Counter()
        self._timers = [
            self.reactor.call_every(config.heartbeat_interval, self._check_leases),
            self.reactor.call_every(config.heartbeat_interval, self.watches.catch_up_all),
            self.reactor.call_every(self.options.watch_progress_interval, self.watches.progress),
            self.reactor.call_every(self.options.compact_check_interval, self._auto_compact),
        ]
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------
    def serve_forever(self) -> None:
        log.info(
            "metastore %s serving on %s (data-dir %s, revision %d)",
            self.config.name,
            self.config.addr,
            self.config.data_dir,
            self.state.revision,
        )
        try:
            self.reactor.run()
        finally:
            self.close()

    def close(self) -> None:
        """Commit what is pending, then close the socket (linger 0) and the database."""
        if self.closed:
            return
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        if self._pending:
            self._flush()
        self.channel.close()
        self.state.close()
        log.info("metastore %s stopped", self.config.name)

    # -- writes: propose, then group commit ------------------------------------------
    def _write(self, build: Callable[[dict[str, Any]], Command]) -> Callable[[Call], Any]:
        def handle(call: Call) -> Any:
            command = build(as_map(call.body, "request body"))
            self._propose(call, command)
            return DEFER

        return handle

    def _propose(self, call: Call | None, command: Command) -> None:
        self._pending.append((call, command.to_dict()))
        if len(self._pending) >= self.options.max_batch:
            self._flush()
        elif self._flush_timer is None:
            # Runs after this wake-up's messages are read: one fsync for all of them.
            self._flush_timer = self.reactor.call_later(0.0, self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        base = self.state.applied_index
        entries = [(base + i + 1, command) for i, (_, command) in enumerate(pending)]
        try:
            outcome = self.state.apply_batch(entries, sync=True)
        except Exception as exc:
            log.exception("metastore: writing a batch of %d commands failed", len(pending))
            for call, _ in pending:
                if call is not None:
                    call.fail(ZdfError(f"write failed: {exc}"))
            return
        finally:
            self._expiring.clear()
        self.stats["write_batches"] += 1
        self.stats["write_commands"] += len(pending)
        for (call, _), result in zip(pending, outcome.results, strict=True):
            if call is None:
                continue
            if isinstance(result, ZdfError):
                call.fail(result)
            else:
                call.reply(result)
        self.watches.publish(outcome.events)

    def _lease_grant(self, body: dict[str, Any]) -> Command:
        return LeaseGrant.from_dict({**body, "now": time.time()})

    def _lease_keepalive(self, body: dict[str, Any]) -> Command:
        return LeaseKeepalive.from_dict({**body, "now": time.time()})

    # -- timers ----------------------------------------------------------------------
    def _lease_deadline(self, lease_id: int) -> float:
        info = self.state.leases[lease_id]
        return max(info.deadline, self.started_wall + info.ttl)

    def _check_leases(self) -> None:
        now = time.time()
        expired = [
            lease_id
            for lease_id in self.state.leases
            if lease_id not in self._expiring and self._lease_deadline(lease_id) <= now
        ]
        if expired:
            log.info("metastore: leases expired: %s", expired)
            self._expiring.update(expired)
            self._propose(None, LeaseExpire(tuple(expired), now))

    def _auto_compact(self) -> None:
        keep = self.options.history_retention
        target = self.state.revision - keep
        if target > self.state.compact_revision + keep // 10:
            self._propose(None, Compact(target))

    # -- reads -----------------------------------------------------------------------
    def _read_body(self, call: Call) -> dict[str, Any]:
        body = as_map(call.body if call.body is not None else {}, "request body")
        field(body, "serializable", as_bool, False)  # one replica: every read is both
        return body

    def _get(self, call: Call) -> dict[str, Any]:
        body = self._read_body(call)
        key = field(body, "key", _key, ...)
        kv = self.state.get(key)
        return {"kv": None if kv is None else kv.to_wire(), "revision": self.state.revision}

    def _range(self, call: Call) -> dict[str, Any]:
        body = self._read_body(call)
        prefix = field(body, "prefix", _key, b"")
        limit = field(body, "limit", _limit, 0)
        kvs, more = self.state.range(prefix, limit)
        return {"kvs": [kv.to_wire() for kv in kvs], "more": more, "revision": self.state.revision}

    def _lease_ttl(self, call: Call) -> dict[str, Any]:
        body = self._read_body(call)
        lease_id = field(body, "id", as_int, ...)
        info = self.state.leases.get(lease_id)
        if info is None:
            raise LeaseNotFound(f"lease {lease_id} not found", lease=lease_id)
        remaining = max(0.0, self._lease_deadline(lease_id) - time.time())
        with_keys = field(body, "keys", as_bool, False)
        return {
            "id": lease_id,
            "ttl": info.ttl,
            "remaining": remaining,
            "keys": self.state.lease_keys(lease_id) if with_keys else [],
            "revision": self.state.revision,
        }

    def _status(self, call: Call) -> dict[str, Any]:
        self._read_body(call)
        cfg = self.config
        members = [
            {"name": name, "peer_addr": peer, "addr": cfg.addr if name == cfg.name else None}
            for name, peer in cfg.cluster.items()
        ]
        return {
            "name": cfg.name,
            "leader": cfg.name,
            "leader_addr": cfg.addr,
            "role": "leader",
            "term": 1,
            "commit_index": self.state.applied_index,
            "applied_index": self.state.applied_index,
            "revision": self.state.revision,
            "compact_revision": self.state.compact_revision,
            "members": members,
            "leases": len(self.state.leases),
            "watches": len(self.watches),
            "watch_lagged": self.watches.lagged,
            "data_dir": cfg.data_dir,
            "write_batches": self.stats["write_batches"],
            "write_commands": self.stats["write_commands"],
            "error_replies": sum(
                self.channel.stats[k] for k in ("malformed", "unknown_op", "handler_errors")
            ),
        }

    # -- watches ---------------------------------------------------------------------
    def _watch(self, call: Call) -> Any:
        body = as_map(call.body, "request body")
        prefix = field(body, "prefix", _key, b"")
        start = field(body, "start_revision", as_int, 0)
        watch_id = field(body, "watch_id", as_int, ...)
        assert call.peer is not None
        watch = self.watches.add(call.peer, watch_id, prefix, start)
        call.reply(
            {
                "watch_id": watch_id,
                "start_revision": watch.next_revision,
                "revision": self.state.revision,
                "progress_interval": self.options.watch_progress_interval,
            }
        )
        if watch.lagging:  # the reply goes first, then the history
            self.watches.catch_up(watch)
        return DEFER

    def _watch_cancel(self, call: Call) -> dict[str, Any]:
        body = as_map(call.body, "request body")
        watch_id = field(body, "watch_id", as_int, ...)
        assert call.peer is not None
        return {"canceled": self.watches.cancel(call.peer, watch_id)}


def _requests_only(handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
    """A one-way event cannot be acknowledged, so it must not write (or watch) either."""

    def handle(call: Call) -> Any:
        if call.is_event:
            raise ProtocolError(f"{call.op!r} must be a request, not a one-way event")
        return handler(call)

    return handle


def _key(value: Any, name: str) -> bytes:
    return as_bytes(value, name, MAX_KEY_BYTES)


def _limit(value: Any, name: str) -> int:
    return as_int(value, name, 0, MAX_RANGE_LIMIT)


def check_single_replica(config: MetastoreConfig) -> None:
    """This build runs one replica; refuse a cluster it would silently not replicate to."""
    if len(config.cluster) != 1:
        raise ValueError(
            "key 'initial-cluster': this metastore runs a single replica; "
            f"list only {config.name!r}"
        )


def run_server(config: MetastoreConfig, options: ServerOptions | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (pending writes committed)."""
    check_single_replica(config)
    server = MetaServer(config, options)
    server.reactor.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    server.serve_forever()
