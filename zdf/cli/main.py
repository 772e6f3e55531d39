"""The ``zdf`` command line: a click group; subcommands live in their own modules."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="zdf")
def main() -> None:
    """zdf: a ZeroMQ low-latency cluster runtime."""
