"""zdf: a ZeroMQ low-latency cluster runtime for dataflow jobs and function tasks.

import zdf
with zdf.connect() as client:  # a cluster of its own; or zdf.connect("host:port")
    future = client.submit(math.sqrt, 2.0)
    print(future.result(timeout=5))
"""

from typing import Any

__version__ = "0.1.0"

_CLIENT_NAMES = (
    "connect",
    "Client",
    "Future",
    "as_completed",
    "wait",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
)

__all__ = ["LocalCluster", "__version__", *_CLIENT_NAMES]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import zdf` stays cheap for the worker processes.
    if name in _CLIENT_NAMES:
        from zdf import client

        return getattr(client, name)
    if name == "LocalCluster":
        from zdf.localcluster import LocalCluster

        return LocalCluster
    raise AttributeError(name)
