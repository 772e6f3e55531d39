"""``zdf meta get|put|del|range|status``: an etcdctl-like look into the metastore.

Every subcommand takes ``--endpoints`` (default 127.0.0.1:10340, or the
environment variable ZDF_META_ENDPOINTS) and ``--format table|json``. The JSON
shapes are stable (DESIGN.md): ``get`` prints ``{"key", "value",
"mod_revision", ...}`` or ``null``, ``status`` an object with ``leader``,
``term`` and ``members``. Bytes are shown as utf-8, undecodable bytes as
``\\xNN`` escapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from zdf.cli.common import (
    FORMAT_OPTION,
    SECURITY_OPTION,
    fail,
    handle_errors,
    print_json,
    print_table,
)
from zdf.config import parse_addr_list
from zdf.metastore.client import DEFAULT_ENDPOINT, MetaClient
from zdf.metastore.kv import KeyValue

F = TypeVar("F", bound=Callable[..., Any])

KV_COLUMNS = ("key", "value", "create_revision", "mod_revision", "version", "lease")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": _text(kv.key),
        "value": _text(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def _kv_rows(kvs: list[KeyValue]) -> list[list[Any]]:
    return [[kv_json(kv)[c] for c in KV_COLUMNS] for kv in kvs]


def client_options(fn: F) -> F:
    fn = FORMAT_OPTION(fn)
    fn = SECURITY_OPTION(fn)
    fn = click.option(
        "--timeout", type=float, default=5.0, show_default=True, help="Deadline per request (s)."
    )(fn)
    return click.option(  # type: ignore[no-any-return]
        "--endpoints",
        envvar="ZDF_META_ENDPOINTS",
        default=DEFAULT_ENDPOINT,
        show_default=True,
        help="Metastore addresses, host:port[,host:port...].",
    )(fn)


def _client(endpoints: str, timeout: float) -> MetaClient:
    try:
        return MetaClient(parse_addr_list(endpoints), timeout=timeout)
    except ValueError as exc:
        fail(f"--endpoints {endpoints!r}: expected {exc}", 2)
        raise  # unreachable: fail exits


@click.group("meta")
def meta_group() -> None:
    """Inspect and edit the metastore (etcdctl-like)."""


@meta_group.command("get")
@click.argument("key")
@client_options
@handle_errors
def get_cmd(key: str, endpoints: str, timeout: float, fmt: str) -> None:
    """Print one key (JSON: {"key", "value", "mod_revision", ...} or null)."""
    with _client(endpoints, timeout) as client:
        kv = client.get(key)
    if fmt == "json":
        print_json(None if kv is None else kv_json(kv))
    elif kv is None:
        click.echo(f"{key}: not found", err=True)
        raise SystemExit(1)
    else:
        print_table(f"revision {client.revision}", KV_COLUMNS, _kv_rows([kv]))


@meta_group.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=int, default=0, help="Attach the key to this lease id.")
@client_options
@handle_errors
def put_cmd(key: str, value: str, lease: int, endpoints: str, timeout: float, fmt: str) -> None:
    """Write KEY = VALUE; print the new revision."""
    with _client(endpoints, timeout) as client:
        revision = int(client.put(key, value, lease=lease))
    if fmt == "json":
        print_json({"revision": revision})
    else:
        click.echo(f"OK revision {revision}")


@meta_group.command("del")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key that starts with KEY.")
@client_options
@handle_errors
def del_cmd(key: str, prefix: bool, endpoints: str, timeout: float, fmt: str) -> None:
    """Delete KEY (or a prefix); print how many keys went."""
    with _client(endpoints, timeout) as client:
        deleted = client.delete(key, prefix=prefix)
    if fmt == "json":
        print_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted}")


@meta_group.command("range")
@click.argument("prefix", default="")
@click.option("--limit", type=int, default=0, help="At most this many keys (0: all).")
@client_options
@handle_errors
def range_cmd(prefix: str, limit: int, endpoints: str, timeout: float, fmt: str) -> None:
    """List the keys under PREFIX in key order."""
    with _client(endpoints, timeout) as client:
        kvs, revision = client.range_with_revision(prefix, limit)
    if fmt == "json":
        print_json([kv_json(kv) for kv in kvs])
    else:
        print_table(f"{len(kvs)} keys at revision {revision}", KV_COLUMNS, _kv_rows(kvs))


@meta_group.command("status")
@client_options
@handle_errors
def status_cmd(endpoints: str, timeout: float, fmt: str) -> None:
    """Print the leader, term, commit index and members."""
    with _client(endpoints, timeout) as client:
        status = client.status()
    if fmt == "json":
        print_json(status)
        return
    rows = [[k, v] for k, v in status.items() if k != "members"]
    print_table("metastore", ("field", "value"), rows)
    members = [[m.get("name"), m.get("addr"), m.get("peer_addr")] for m in status["members"]]
    print_table("members", ("name", "addr", "peer_addr"), members)
