"""The Python client for short function tasks: ``zdf.connect`` and futures."""

from zdf.client.client import Client, connect, function_path
from zdf.client.futures import Future, as_completed, remote_exception

__all__ = ["Client", "Future", "as_completed", "connect", "function_path", "remote_exception"]
