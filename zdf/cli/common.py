"""Shared pieces of the command line: config flags, logging, output formats, errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import click
import zmq
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from zdf.config import fields_of, load_config, parse_addr
from zdf.errors import ConfigError, Timeout, UnknownOutcome, ZdfError
from zdf.wire.rpc import RpcClient

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

UNBOUNDED = 10_000
"""Columns to measure a table's natural width in (wider than any table we print)."""

FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def _client_security(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from zdf.wire import security

    try:
        security.configure(value or "", "client")
    except ConfigError as exc:
        raise click.BadParameter(exc.message) from None


SECURITY_OPTION = click.option(
    "--security-dir",
    envvar="ZDF_SECURITY_DIR",
    default=None,
    expose_value=False,
    callback=_client_security,
    help="CURVE keys of the cluster (zdf security init); the client role's are used.",
)
"""A client command's keys: installed for every socket it makes."""


def MASTER_OPTION(fn: F) -> F:
    """``--master-addr`` and ``--security-dir``: what a command that asks the master takes."""
    fn = SECURITY_OPTION(fn)
    return click.option(  # type: ignore[no-any-return]
        "--master-addr",
        envvar="ZDF_MASTER_ADDR",
        default="127.0.0.1:10240",
        show_default=True,
        help="The master's host:port (a comma-separated list with standbys; empty: "
        "find the masters in the metastore at ZDF_META_ENDPOINTS).",
    )(fn)


def setup_security(config: Any, role: str, *binds: str) -> None:
    """A process's keys from its ``security-dir`` (and ``insecure``) config keys, and
    its ``max-message-depth``; its children (workers) find them in the environment.
    ``binds``: the addresses it will bind, refused now (one line) if protected mode
    forbids them."""
    from zdf.wire import codec, security
    from zdf.wire.sockets import endpoint

    security.configure(config.security_dir, role, insecure=config.insecure)
    for addr in binds:
        security.check_bind(endpoint(addr))
    codec.set_max_depth(config.max_message_depth)
    os.environ["ZDF_SECURITY_DIR"] = config.security_dir
    os.environ["ZDF_INSECURE"] = "true" if config.insecure else "false"
    os.environ["ZDF_MAX_MESSAGE_DEPTH"] = str(config.max_message_depth)


TIMEOUT_OPTION = click.option(
    "--timeout",
    "rpc_timeout",
    type=float,
    default=5.0,
    envvar="ZDF_TIMEOUT",
    show_default=True,
    help="Seconds to wait for the master's answer.",
)


def master_endpoints(master_addr: str) -> list[str]:
    """The addresses of ``--master-addr``; given none, those the metastore's discovery
    records name (at ``ZDF_META_ENDPOINTS``). A malformed one is a one-line ``ConfigError``."""
    endpoints = [a.strip() for a in master_addr.split(",") if a.strip()]
    if not master_addr.strip():
        from zdf.config import parse_addr_list
        from zdf.discovery import find_masters

        meta = os.environ.get("ZDF_META_ENDPOINTS", "127.0.0.1:10340")
        return find_masters(parse_addr_list(meta))
    if not endpoints:
        raise ConfigError("--master-addr: expected host:port (e.g. 127.0.0.1:10240), got nothing")
    for addr in endpoints:
        try:
            parse_addr(addr)
        except ValueError:
            raise ConfigError(
                f"--master-addr: expected host:port (e.g. 127.0.0.1:10240), got {addr!r}"
            ) from None
        if "/" in addr.rpartition(":")[0]:
            raise ConfigError(
                f"--master-addr: expected host:port without a scheme (e.g. 127.0.0.1:10240), "
                f"got {addr!r}"
            )
    return endpoints


class MasterClient(RpcClient):
    """An ``RpcClient`` to the master whose silence is a message a user can act on."""

    def call_frames(self, op: str, body: Any = None, **kwargs: Any) -> tuple[Any, list[bytes]]:
        try:
            return super().call_frames(op, body, **kwargs)
        except Timeout as exc:
            if isinstance(exc, UnknownOutcome):
                raise
            waited = kwargs.get("timeout") or self.timeout
            where = ", ".join(self.endpoints)
            raise Timeout(
                f"no master answered at {where} within {waited:g}s: is a master running "
                "there? (--master-addr or ZDF_MASTER_ADDR say where; --timeout how long to wait)"
            ) from None


def master_client(master_addr: str, timeout: float = 5.0) -> MasterClient:
    return MasterClient(master_endpoints(master_addr), timeout=timeout)


def config_options(cls: type) -> Callable[[F], F]:
    """Add --config and one flag per config key (``--keepalive-ttl`` ...) to a command."""

    def decorate(fn: F) -> F:
        for f in reversed(fields_of(cls)):
            key = f.metadata["key"]
            fn = click.option(
                f"--{key}", key.replace("-", "_"), default=None, help=f.metadata["help"]
            )(fn)
        return click.option(
            "--config", "config_path", type=str, default=None, help="TOML config file."
        )(fn)

    return decorate


def load_from_flags(cls: type[T], config_path: str | None, flags: dict[str, Any]) -> T:
    keys = {f.metadata["key"] for f in fields_of(cls)}
    overrides = {k: flags.get(k.replace("-", "_")) for k in keys}
    return load_config(cls, config_path, overrides)


def setup_logging(level: str, log_file: str = "", name: str = "zdf", fmt: str = "text") -> None:
    """The process's log lines: ``zdf.observe.logs`` (text or JSON, rate-limited warnings)."""
    from zdf.observe.logs import configure_logging

    configure_logging(level, log_file, name, fmt)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn zdf errors into one line on stderr: exit 2 for config, 1 otherwise."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(exc.message, 2)
        except ZdfError as exc:
            fail(str(exc) or type(exc).__name__, 1)
        except zmq.ZMQError as exc:  # a socket that cannot bind, most often
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    whole: Collection[str] = (),
    console: Console | None = None,
) -> None:
    """A rich table. The columns named in ``whole`` (ids a user copies into the next
    command) are never shortened: in a narrow terminal the others give way. Output that
    is not a terminal (a pipe, a file) has no width to fit, so nothing is shortened."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        if column in whole:
            longest = max([len(column), *(len(row[i]) for row in cells)])
            table.add_column(column, no_wrap=True, min_width=longest)
        else:
            table.add_column(column)
    for row in cells:
        table.add_row(*row)
    console = console or Console()
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(UNBOUNDED), table)
        console = Console(file=console.file, width=max(console.width, natural.maximum))
    console.print(table)
