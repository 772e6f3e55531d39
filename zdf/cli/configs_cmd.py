"""``zdf configs [DIR]``: copy the example configs out, for a pip install as for a checkout.

The wheel installs them as data files under ``<prefix>/share/zdf/configs``; a
checkout (or an editable install) has them in ``configs/`` beside the package.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import click

from zdf.cli.common import handle_errors
from zdf.errors import ConfigError


def example_dirs() -> list[Path]:
    """Where the example configs may be, most specific first."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return [
        Path(sysconfig.get_path("data")) / "share" / "zdf" / "configs",
        Path(sys.prefix) / "share" / "zdf" / "configs",
        checkout,
    ]


def find_examples() -> Path:
    for path in example_dirs():
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    searched = ", ".join(str(p) for p in example_dirs())
    raise ConfigError(f"no example configs found (looked in {searched})")


@click.command("configs")
@click.argument("directory", default="configs")
@click.option("--force", is_flag=True, help="Overwrite files that are there already.")
@handle_errors
def configs_cmd(directory: str, force: bool) -> None:
    """Copy the example configs (master, executors, metastore, jobs) into DIRECTORY."""
    source = find_examples()
    target = Path(directory)
    if target.resolve() == source.resolve():
        click.echo(f"the example configs are in {source}")
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.toml")):
        dest = target / path.name
        if dest.exists() and not force:
            click.echo(f"kept {dest} (there already; --force overwrites)")
            continue
        shutil.copyfile(path, dest)
        click.echo(f"wrote {dest}")
