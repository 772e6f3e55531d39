"""The Python client for short function tasks: ``zdf.connect``, futures and task graphs."""

from zdf.client.client import Client, connect, function_path
from zdf.client.futures import Future, as_completed, remote_exception
from zdf.client.graph import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, wait

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "Future",
    "as_completed",
    "connect",
    "function_path",
    "remote_exception",
    "wait",
]
