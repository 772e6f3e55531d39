"""Which master leads: a lease-backed key in the metastore.

Theory of operation: every master campaigns with one transaction — "if the key
does not exist, create it under my lease" — and the one that succeeds leads.
The revision at which it won is its **epoch**: it only grows, so executors and
the framework's records can tell a newer leader from an older one. The leader
refreshes its lease every ``ttl / 4``.

A standby that lost the campaign **watches** the key (``watch()``): the watch
starts just after the revision at which the standby last looked, so a delete
in between is not missed, and a ``delete`` event (the leader's lease expired,
or it resigned, or an operator removed the key) makes it campaign at once.
The watch is a socket the master's reactor polls (``LeaderWatch``), so it never
blocks the loop; while it is silent (no progress report from the server for
``FRESH_INTERVALS`` intervals, e.g. its replica died and it has not yet
subscribed elsewhere) or broken, the master polls the key instead
(``zdf.master.server``).

Fencing: every framework write of the leader is a transaction whose compare is
``create_revision(ELECTION_KEY) == epoch`` (``zdf.master.persist``). A leader
deposed without noticing (its keepalive not yet due, the key deleted under a
live lease) gets ``LostLeadership`` from its next write and must stop acting
at once (fail-stop); so must a leader whose keepalive finds its lease gone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import zmq

from zdf.errors import LeaseNotFound, RemoteError, ZdfError
from zdf.metastore.client import MetaClient
from zdf.metastore.txn import Compare, get_op, put_op
from zdf.metastore.watch import Watch

log = logging.getLogger(__name__)

ELECTION_KEY = "/zdf/election/master"
FRESH_INTERVALS = 2
"""Progress intervals of watch silence after which a standby polls the key instead."""


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
        self.revision = 0
        """The store's revision when this master last looked at the key."""

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
        self.revision = max(self.revision, result.revision)
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
        self.revision = max(self.revision, self.meta.revision)
        if kv is None:
            return None
        return self._leader(json.loads(kv.value), kv.create_revision)

    def watch(self) -> LeaderWatch:
        """Changes of the key after the last look at it (``campaign`` or ``leader``)."""
        return LeaderWatch(self.meta.watch(ELECTION_KEY, self.revision + 1))

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


class LeaderWatch:
    """A standby's view of the election key, fed by a metastore watch.

    For a reactor: register ``socket`` as a reader and call ``poll()`` when it
    is readable and every ``check_interval`` seconds (the watch's own liveness
    check, which subscribes again after a silent server). ``poll`` never
    blocks; it raises ``ZdfError`` when the watch is gone for good (e.g.
    ``CompactedError``), and the caller falls back to polling the key.
    """

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self.leader: LeaderInfo | None = None
        """The leader the last ``put`` event named (None until one is seen)."""

    @property
    def socket(self) -> zmq.Socket[bytes]:
        return self._watch.socket

    @property
    def check_interval(self) -> float:
        return self._watch.check_interval

    @property
    def fresh(self) -> bool:
        """The server spoke within ``FRESH_INTERVALS`` progress intervals: trust the watch."""
        return self._watch.silence <= FRESH_INTERVALS * self._watch.check_interval

    def poll(self) -> bool:
        """Take what arrived; True when the key was deleted (time to campaign)."""
        vacated = False
        key = ELECTION_KEY.encode()
        for event in self._watch.poll(0.0):
            if event.key != key:
                continue  # another key under the same prefix
            if event.type == "delete":
                vacated, self.leader = True, None
            else:
                try:
                    doc = json.loads(event.value)
                except ValueError:
                    continue
                vacated, self.leader = False, MasterElection._leader(doc, event.kv.create_revision)
        return vacated

    def close(self) -> None:
        self._watch.close()
