"""``zdf security init DIR``: the CURVE key pairs of a cluster's roles.

Writes ``ROLE.key`` (public, 0644) and ``ROLE.key_secret`` (0600) for the roles
metastore, master, executor and client in DIR (0700), with pyzmq's
``zmq.auth``. Existing keys are kept; ``--rotate ROLE`` replaces one role's pair
(restart that role's processes and give the new ``ROLE.key`` to every host).
"""

from __future__ import annotations

import click

from zdf.cli.common import handle_errors
from zdf.wire import security


@click.group("security")
def security_group() -> None:
    """Keys for CURVE authentication between zdf processes."""


@security_group.command("init")
@click.argument("directory")
@click.option(
    "--rotate",
    type=click.Choice(security.ROLES),
    multiple=True,
    help="Replace this role's key pair (repeatable).",
)
@handle_errors
def init_cmd(directory: str, rotate: tuple[str, ...]) -> None:
    """Create DIR (0700) with a key pair per role (metastore, master, executor, client)."""
    written = security.init_dir(directory, rotate or security.ROLES, rotate=bool(rotate))
    for path in written:
        click.echo(path)
    if not written:
        click.echo(f"{directory}: every role has its keys already (--rotate ROLE to replace)")
