"""Finding the masters through the metastore (``meta-endpoints`` alone is enough).

The leading master keeps a record under ``/zdf/discovery/masters/<name>`` (written
by ``zdf.master.persist``, under a lease, so a dead master's record goes with its
lease); the election key names the leader. An executor or a client given no master
address reads them here: the leader first, then every other recorded master, as
``host:port`` addresses to dial.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zdf.errors import ZdfError

log = logging.getLogger(__name__)

DISCOVERY_MASTERS = "/zdf/discovery/masters/"
"""The prefix ``zdf.master.persist`` writes the masters' records under."""

DISCOVERY_TIMEOUT = 3.0


def _doc(value: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def find_masters(meta_endpoints: list[str], timeout: float = DISCOVERY_TIMEOUT) -> list[str]:
    """The masters' advertised addresses from the metastore, newest epoch first.

    Raises ``ZdfError`` when the metastore cannot be read or records no master."""
    from zdf.metastore.client import MetaClient

    with MetaClient(meta_endpoints, timeout=timeout) as meta:
        records = [_doc(kv.value) for kv in meta.range(DISCOVERY_MASTERS)]
    records = [r for r in records if isinstance(r.get("addr"), str)]
    records.sort(key=lambda r: -int(r.get("epoch") or 0))
    addrs = list(dict.fromkeys(str(r["addr"]) for r in records))
    if not addrs:
        raise ZdfError(f"no master recorded in the metastore at {','.join(meta_endpoints)}")
    return addrs
