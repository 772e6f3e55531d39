"""Shared pieces of the command line: config flags, logging, output formats, errors."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from zdf.config import fields_of, load_config
from zdf.errors import ConfigError, ZdfError

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

MASTER_OPTION = click.option(
    "--master-addr",
    envvar="ZDF_MASTER_ADDR",
    default="127.0.0.1:10240",
    show_default=True,
    help="The master's host:port (a comma-separated list with standbys; empty: "
    "find the masters in the metastore at ZDF_META_ENDPOINTS).",
)


def master_endpoints(master_addr: str) -> list[str]:
    """The masters to dial; given none, those the metastore's discovery records name."""
    found = [a.strip() for a in master_addr.split(",") if a.strip()]
    if found:
        return found
    from zdf.config import parse_addr_list
    from zdf.discovery import find_masters

    meta = os.environ.get("ZDF_META_ENDPOINTS", "127.0.0.1:10340")
    return find_masters(parse_addr_list(meta))


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


def setup_logging(level: str, log_file: str = "", name: str = "zdf") -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


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
