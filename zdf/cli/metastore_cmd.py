"""``zdf metastore --config FILE``: run the metastore server (flags override config keys)."""

from __future__ import annotations

from typing import Any

import click
import plyvel
import zmq

from zdf.cli.common import (
    config_options,
    fail,
    handle_errors,
    load_from_flags,
    setup_logging,
    setup_security,
)
from zdf.config import MetastoreConfig


@click.command("metastore")
@config_options(MetastoreConfig)
@handle_errors
def metastore_cmd(config_path: str | None, **flags: Any) -> None:
    """Run one metastore replica (KV, txn, watch, leases over a Raft-lite log)."""
    from zdf.metastore.server import run_server

    config = load_from_flags(MetastoreConfig, config_path, flags)
    setup_logging(config.log_level, config.log_file, f"metastore[{config.name}]", config.log_format)
    setup_security(config, "metastore", config.addr, config.peer_addr)
    try:
        run_server(config)
    except zmq.ZMQError as exc:
        fail(str(exc))
    except plyvel.Error as exc:  # e.g. another server holds the data-dir's lock
        fail(f"cannot open {config.data_dir}: {exc}")
