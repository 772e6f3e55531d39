"""A client inside a test's namespace: the test process talks to it over pipes.

The test process lives in the machine's own network namespace and cannot reach the
hosts' addresses; this small process runs inside the ``client`` host (``ip netns
exec``) and makes the calls for it. One JSON object a line on standard input:
``{"kind": "rpc", "endpoints": [...], "op", "body", "timeout"}``, or a
``meta_status``, ``meta_get``, ``meta_history`` or ``function_abs`` request; one line back: ``{"ok":
result}`` or ``{"error": text, "type": class name}``. It exits at the end of its input.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from zdf.errors import ZdfError
from zdf.metastore.client import MetaClient
from zdf.wire import security
from zdf.wire.rpc import RpcClient


def use_keys() -> None:
    """The cluster's client keys, once they exist (the cluster makes them as it starts,
    after this process has started)."""
    keys = os.environ.get("ZDF_SECURITY_DIR", "")
    if keys and security.current() is None:
        security.configure(keys, "client")


def answer(request: dict[str, Any], clients: dict[str, RpcClient]) -> Any:
    use_keys()
    endpoints = list(request["endpoints"])
    timeout = float(request.get("timeout") or 5.0)
    if request["kind"] == "meta_status":
        with MetaClient(endpoints, timeout=timeout) as meta:
            return meta.status()
    if request["kind"] == "meta_get":
        with MetaClient(endpoints, timeout=timeout) as meta:
            kv = meta.get(request["key"])
        return None if kv is None else {"value": kv.value.decode(), **_revisions(kv)}
    if request["kind"] == "meta_history":
        with MetaClient(endpoints, timeout=timeout) as meta:
            watch = meta.watch(request["prefix"], int(request["from"]))
            try:
                return [
                    {"key": e.key.decode(), "value": e.kv.value.decode(), **_revisions(e.kv)}
                    for e in watch.events(float(request.get("quiet", 1.0)))
                ]
            finally:
                watch.close()
    if request["kind"] == "function_abs":  # a function task, masters found by discovery
        import zdf

        with zdf.connect(meta_endpoints=endpoints) as client:
            return client.submit(abs, int(request["value"])).result(timeout=timeout)
    key = ",".join(endpoints)
    if key not in clients:
        clients[key] = RpcClient(endpoints, timeout=timeout)
    return clients[key].call(
        request["op"], request.get("body"), timeout=timeout, retry=request.get("retry", True)
    )


def _revisions(kv: Any) -> dict[str, int]:
    return {"create_revision": kv.create_revision, "mod_revision": kv.mod_revision}


def main() -> None:
    clients: dict[str, RpcClient] = {}
    for line in sys.stdin:
        try:
            reply: dict[str, Any] = {"ok": answer(json.loads(line), clients)}
        except ZdfError as exc:
            reply = {"error": str(exc), "type": type(exc).__name__}
        sys.stdout.write(json.dumps(reply, default=repr) + "\n")
        sys.stdout.flush()
    for client in clients.values():
        client.close()


if __name__ == "__main__":
    main()
