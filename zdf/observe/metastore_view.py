"""What a metastore replica shows: a snapshot of its Raft state and its metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from zdf.observe import families as F

if TYPE_CHECKING:
    from zdf.metastore.server import MetaServer


def snapshot(server: MetaServer) -> dict[str, Any]:
    status = server.replica.status()
    latency = server.write_latency
    return {
        "name": server.config.name,
        "role": status["role"],
        "leader": status["leader"],
        "term": status["term"],
        "commit_index": status["commit_index"],
        "applied_index": status["applied_index"],
        "last_index": status["last_index"],
        "revision": server.state.revision,
        "leases": len(server.state.leases),
        "watches": len(server.watches),
        "write_commands": server.replica.stats["proposed"],
        "log_syncs": server.replica.log.stats_syncs,
        "write_batches": server.replica.log.stats_flushes,
        "latency_buckets": latency.buckets(),
        "latency_sum": latency.total,
        "callback_errors": server.reactor.callback_errors,
    }


def healthy(snap: dict[str, Any]) -> bool:
    return bool(snap["leader"])  # a replica that knows no leader cannot serve writes


def metrics(snap: dict[str, Any]) -> Iterator[Metric]:
    yield F.gauge("metastore_leader", "1 while this replica leads", snap["role"] == "leader")
    yield F.gauge("metastore_term", "Raft term", snap["term"])
    yield F.gauge(
        "metastore_commit_index", "Highest log index known committed", snap["commit_index"]
    )
    yield F.gauge("metastore_applied_index", "Highest log index applied", snap["applied_index"])
    yield F.gauge("metastore_last_index", "Last log index", snap["last_index"])
    yield F.gauge("metastore_revision", "Store revision", snap["revision"])
    yield F.gauge("metastore_leases", "Leases", snap["leases"])
    yield F.gauge("metastore_watches", "Watches", snap["watches"])
    yield F.counter("metastore_write_commands", "Write commands proposed", snap["write_commands"])
    yield F.counter("metastore_log_syncs", "fsyncs of the log", snap["log_syncs"])
    yield F.counter("metastore_write_batches", "Log appends (group commits)", snap["write_batches"])
    yield F.histogram(
        "metastore_write_latency_seconds",
        "Time from a write's arrival to its answer (committed and applied)",
        snap["latency_buckets"],
        snap["latency_sum"],
    )
    yield from F.loop_counters(snap)
