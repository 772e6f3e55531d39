"""Which master leads: a lease-backed key in the metastore.

Theory of operation: every master campaigns with one transaction — "if the key
does not exist, create it under my lease" — and the one that succeeds leads.
The revision at which it won is its **epoch**: it only grows, so executors and
the framework's records can tell a newer leader from an older one. The leader
refreshes its lease every ``ttl / 4``; standbys look at the key every
``poll`` seconds and campaign as soon as it is gone (the leader died and its
lease expired, or it resigned). A leader whose keepalive finds its lease gone
has lost the key to someone else: it must stop acting at once (fail-stop).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from zdf.errors import LeaseNotFound, RemoteError, ZdfError
from zdf.metastore.client import MetaClient
from zdf.metastore.txn import Compare, get_op, put_op

log = logging.getLogger(__name__)

ELECTION_KEY = "/zdf/election/master"


class LostLeadership(ZdfError):
    """This master no longer leads; it must stop acting (fail-stop)."""


@dataclass(frozen=True)
class LeaderInfo:
    name: str
    addr: str
    heartbeat_addr: str
    epoch: int


class MasterElection:
    def __init__(self, meta: MetaClient, info: dict[str, Any], ttl: float) -> None:
        self.meta = meta
        self.info = info
        self.ttl = ttl
        self.lease: int | None = None
        self.epoch: int | None = None

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def campaign(self) -> LeaderInfo | None:
        """Try to take the key; returns the current leader (possibly us) or None if none."""
        current = self.leader()
        if current is not None:
            return current
        if self.lease is None:
            self.lease = self.meta.lease_grant(self.ttl)
        doc = json.dumps(self.info).encode()
        result = self.meta.txn(
            [Compare.create_revision(ELECTION_KEY) == 0],
            [put_op(ELECTION_KEY, doc, lease=self.lease)],
            [get_op(ELECTION_KEY)],
        )
        if result.succeeded:
            self.epoch = result.revision
            log.info("%s leads from epoch %d", self.info.get("name"), self.epoch)
            return self._leader(self.info, self.epoch)
        self.resign()  # lost the race: our lease is of no use
        kvs = result.responses[0] if result.responses else []
        if not kvs:
            return None
        return self._leader(json.loads(kvs[0].value), kvs[0].create_revision)

    def leader(self) -> LeaderInfo | None:
        kv = self.meta.get(ELECTION_KEY)
        if kv is None:
            return None
        return self._leader(json.loads(kv.value), kv.create_revision)

    def keepalive(self) -> bool:
        """Refresh the lease; False when it is gone (leadership lost)."""
        if self.lease is None:
            return False
        try:
            self.meta.lease_keepalive(self.lease)
            return True
        except LeaseNotFound:
            return False
        except RemoteError as exc:
            if exc.remote_type == "LeaseNotFound":
                return False
            raise

    def resign(self) -> None:
        if self.lease is not None:
            try:
                self.meta.lease_revoke(self.lease)
            except ZdfError as exc:
                log.warning("could not resign: %s", exc)
        self.lease = None
        self.epoch = None

    @staticmethod
    def _leader(doc: dict[str, Any], epoch: int) -> LeaderInfo:
        return LeaderInfo(
            str(doc.get("name", "")),
            str(doc.get("addr", "")),
            str(doc.get("heartbeat_addr", "")),
            int(epoch),
        )
