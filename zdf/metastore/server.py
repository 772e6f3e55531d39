"""The metastore server, one replica of 1, 3 or 5: ``zdf metastore --config FILE``.

Theory of operation: one reactor, one ROUTER ``Channel`` at ``addr`` for
clients, and a ``Replica`` (the Raft-lite log, its peers and the state
machine) under it. Writes become commands -- carrying everything replicas must
agree on: the leader's clock, the client's request id -- and are *proposed*;
every write of one reactor wake-up shares one log append and one fsync (group
commit), and each is answered once its entry is committed by a majority and
applied. A replica that is not the leader answers writes and linearizable
reads with ``NotLeader`` and the leader's client address as a hint. A
linearizable read waits for ``Replica.read`` (the leader's lease or a
ReadIndex round); a read that asks for ``serializable`` is answered from the
local state at once, on any replica. Watches are served by every replica.

Storage errors are fatal: a disk that is full or failing stops the replica
with one line naming its data-dir (``STORAGE_ERRORS`` end the reactor). A write
is answered only once its entry is on disk, so nothing acknowledged is lost; the
writes in flight get no answer (``UnknownOutcome`` for their clients, as in any
crash) and the other replicas, if any, go on.

Lease expiry is decided by the leader, by its wall clock, and committed as a
``lease_expire`` command, so that every replica deletes the same keys. A new
leader gives every lease at least its full TTL from the moment it took over,
as etcd does, so a leader change or downtime never expires healthy sessions.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plyvel
import zmq

from zdf.config import MetastoreConfig
from zdf.errors import LeaseNotFound, ProtocolError, ZdfError
from zdf.metastore import access
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
    request_id,
)
from zdf.metastore.lease_owners import LeaseOwners
from zdf.metastore.replica import Replica
from zdf.metastore.state import MetaState, Result
from zdf.metastore.watch_hub import WatchHub
from zdf.observe.latency import LatencyHistogram
from zdf.wire.reactor import Reactor
from zdf.wire.rpc import DEFER, Call, Channel
from zdf.wire.sockets import has_input, make_socket

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
        try:
            sock = make_socket(
                zmq.ROUTER, bind=config.addr, max_message_bytes=self.options.max_request_bytes
            )
        except zmq.ZMQError:
            self.state.close()
            raise
        self.watches = WatchHub(sock, self.state, max_watches=self.options.max_watches)
        try:
            self.replica = Replica(
                config,
                self.state,
                self.reactor,
                on_events=self.watches.publish,
                on_reset=self.watches.resync_all,
                watching=lambda: bool(self.watches.watches),
                clients_waiting=lambda: has_input(sock),
            )
        except Exception:
            sock.close(0)
            self.state.close()
            raise
        # A storage error (a full or failing disk) stops the replica: what it holds in
        # memory may have moved past what it could write, so it must not go on.
        self.reactor.fatal_errors = STORAGE_ERRORS
        # Report unroutable peers (gone watchers) instead of dropping silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        handlers: dict[str, Callable[[Call], Any]] = {
            "get": self._read(self._get),
            "range": self._read(self._range),
            "status": self._status,
            "lease_ttl": self._read(self._lease_ttl),
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
        self.channel = Channel(
            self.reactor, sock, handlers, name=f"metastore {config.name}", roles=access.OPERATIONS
        )
        self.channel.on_drained = self.replica.process_now
        self._expiring: set[int] = set()
        self.lease_owners = LeaseOwners(config.max_leases_per_client)
        self.stats: Counter[str] = Counter()
        self.write_latency = LatencyHistogram()  # read at scrape time (zdf.observe)
        self._timers = [
            self.reactor.call_every(config.heartbeat_interval, self._check_leases),
            self.reactor.call_every(config.heartbeat_interval, self.watches.catch_up_all),
            self.reactor.call_every(self.options.watch_progress_interval, self.watches.progress),
            self.reactor.call_every(self.options.compact_check_interval, self._auto_compact),
            self.reactor.call_every(
                self.options.compact_check_interval,
                lambda: self.lease_owners.sweep(self.state.leases),
            ),
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
        except STORAGE_ERRORS as exc:
            raise ZdfError(
                f"data-dir {self.config.data_dir}: {describe_storage_error(exc)}; stopped "
                "(every write acknowledged before is on disk)"
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        """Commit what is pending, then close the socket (linger 0) and the database."""
        if self.closed:
            return
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        try:
            self.replica.close()
        except STORAGE_ERRORS as exc:  # the disk that stopped us
            log.error(
                "metastore: could not write the log at close: %s", describe_storage_error(exc)
            )
        self.channel.close()
        self.state.close()
        log.info("metastore %s stopped", self.config.name)

    # -- writes: propose, reply once committed and applied -----------------------------
    def _write(self, build: Callable[[dict[str, Any]], Command]) -> Callable[[Call], Any]:
        def handle(call: Call) -> Any:
            body = as_map(call.body, "request body")
            parsed = build(body)
            access.check_write(call.role, parsed)
            access.check_values(parsed, self.config.max_meta_value_bytes)
            granted = None
            if isinstance(parsed, LeaseGrant):
                access.check_lease(
                    call.role,
                    parsed,
                    len(self.state.leases),
                    self.config.max_leases,
                    self.config.max_client_lease_ttl,
                )
                self.lease_owners.check(call.role, call.peer, self.state.leases)
                granted = self.lease_owners.granting(call.role, call.peer)
            command = parsed.to_dict()
            req = field(body, "req", request_id, None)
            if req is not None:
                command["req"] = req
                command["ts"] = int(time.time() * 1000)
            arrived = time.perf_counter()

            def done(result: Result) -> None:
                self.write_latency.observe(time.perf_counter() - arrived)
                if granted is not None:
                    granted(result)
                if isinstance(result, ZdfError):
                    call.fail(result)
                else:
                    call.reply(result)

            try:
                self.replica.propose(command, done, parsed)
            except BaseException:
                if granted is not None:
                    granted(None)
                raise
            return DEFER

        return handle

    def _propose_internal(self, command: Command) -> None:
        if self.replica.is_leader:
            self.replica.propose(command.to_dict(), self._internal_done, command)

    def _internal_done(self, result: Result) -> None:
        self._expiring.clear()
        if isinstance(result, ZdfError):
            log.info("metastore: internal command failed: %s", result)

    def _lease_grant(self, body: dict[str, Any]) -> Command:
        return LeaseGrant.from_dict({**body, "now": time.time()})

    def _lease_keepalive(self, body: dict[str, Any]) -> Command:
        return LeaseKeepalive.from_dict({**body, "now": time.time()})

    # -- timers ----------------------------------------------------------------------
    def _lease_deadline(self, lease_id: int) -> float:
        info = self.state.leases[lease_id]
        return max(info.deadline, self.replica.leader_since_wall + info.ttl)

    def _check_leases(self) -> None:
        if not self.replica.is_leader:
            self._expiring.clear()
            return
        now = time.time()
        expired = [
            lease_id
            for lease_id in self.state.leases
            if lease_id not in self._expiring and self._lease_deadline(lease_id) <= now
        ]
        if expired:
            log.info("metastore: leases expired: %s", expired)
            self._expiring.update(expired)
            self._propose_internal(LeaseExpire(tuple(expired), now))

    def _auto_compact(self) -> None:
        keep = self.options.history_retention
        target = self.state.revision - keep
        if target > self.state.compact_revision + keep // 10:
            self._propose_internal(Compact(target))

    # -- reads -----------------------------------------------------------------------
    def _read(self, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Call], Any]:
        """A read: parsed at once, answered from local state when it may be."""

        def handle(call: Call) -> Any:
            body = as_map(call.body if call.body is not None else {}, "request body")
            serializable = field(body, "serializable", as_bool, False)
            if serializable or (self.replica.single and self.replica.is_leader):
                return answer(body)
            answer(body)  # refuse bad input before waiting

            def ready(error: ZdfError | None) -> None:
                if error is not None:
                    call.fail(error)
                    return
                try:
                    call.reply(answer(body))
                except ZdfError as exc:
                    call.fail(exc)

            self.replica.read(ready)
            return DEFER

        return handle

    def _get(self, body: dict[str, Any]) -> dict[str, Any]:
        key = field(body, "key", _key, ...)
        kv = self.state.get(key)
        return {"kv": None if kv is None else kv.to_wire(), "revision": self.state.revision}

    def _range(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix = field(body, "prefix", _key, b"")
        limit = field(body, "limit", _limit, 0)
        kvs, more = self.state.range(prefix, limit)
        return {"kvs": [kv.to_wire() for kv in kvs], "more": more, "revision": self.state.revision}

    def _lease_ttl(self, body: dict[str, Any]) -> dict[str, Any]:
        lease_id = field(body, "id", as_int, ...)
        with_keys = field(body, "keys", as_bool, False)
        info = self.state.leases.get(lease_id)
        if info is None:
            raise LeaseNotFound(f"lease {lease_id} not found", lease=lease_id)
        remaining = max(0.0, self._lease_deadline(lease_id) - time.time())
        return {
            "id": lease_id,
            "ttl": info.ttl,
            "remaining": remaining,
            "keys": self.state.lease_keys(lease_id) if with_keys else [],
            "revision": self.state.revision,
        }

    def _status(self, call: Call) -> dict[str, Any]:
        as_map(call.body if call.body is not None else {}, "request body")
        cfg = self.config
        return {
            "name": cfg.name,
            "addr": cfg.addr,
            **self.replica.status(),
            "revision": self.state.revision,
            "compact_revision": self.state.compact_revision,
            "leases": len(self.state.leases),
            "watches": len(self.watches),
            "watch_lagged": self.watches.lagged,
            "data_dir": cfg.data_dir,
            "write_batches": self.replica.log.stats_flushes,
            "log_syncs": self.replica.log.stats_syncs,
            "write_commands": self.replica.stats["proposed"],
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


STORAGE_ERRORS: tuple[type[BaseException], ...] = (plyvel.Error, OSError)


def describe_storage_error(exc: BaseException) -> str:
    """One line: LevelDB's message (bytes) or the OS error and its file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    text = exc.args[0] if exc.args else type(exc).__name__
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


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


def run_server(config: MetastoreConfig, options: ServerOptions | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (pending writes committed)."""
    from zdf.observe.attach import observe_metastore

    server = MetaServer(config, options)
    server.reactor.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    try:
        observer = observe_metastore(server)
    except ZdfError:
        server.close()
        raise
    try:
        server.serve_forever()
    finally:
        if observer is not None:
            observer.close()
