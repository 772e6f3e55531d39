"""zdf: a ZeroMQ low-latency cluster runtime for dataflow jobs and function tasks.

import zdf
with zdf.connect("127.0.0.1:10240") as client:
    future = client.submit(math.sqrt, 2.0)
    print(future.result(timeout=5))
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Client", "Future", "__version__", "as_completed", "connect"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import zdf` stays cheap for the worker processes.
    if name in ("connect", "Client", "Future", "as_completed"):
        from zdf import client

        return getattr(client, name)
    raise AttributeError(name)
