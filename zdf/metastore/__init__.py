"""The metastore: a LevelDB state machine (KV, txn, watch, leases) behind a ZeroMQ server.

The client side is re-exported here; the server lives in ``zdf.metastore.server``
(it imports plyvel, which clients do not need).
"""

from zdf.metastore.client import MetaClient
from zdf.metastore.kv import Event, KeyValue
from zdf.metastore.txn import Compare, PutResponse, TxnResult, delete_op, get_op, put_op
from zdf.metastore.watch import Watch

__all__ = [
    "Compare",
    "Event",
    "KeyValue",
    "MetaClient",
    "PutResponse",
    "TxnResult",
    "Watch",
    "delete_op",
    "get_op",
    "put_op",
]
