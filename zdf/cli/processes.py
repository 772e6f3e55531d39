"""``zdf master`` and ``zdf executor``: run the long-lived processes.

``zdf executor`` with ``--config`` runs an executor; ``zdf executor list`` asks
the master for the executors it knows (the group doubles as both).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

import click

from zdf.cli.common import (
    FORMAT_OPTION,
    MASTER_OPTION,
    TIMEOUT_OPTION,
    config_options,
    handle_errors,
    load_from_flags,
    master_client,
    print_json,
    print_table,
    setup_logging,
    setup_security,
)
from zdf.config import ExecutorConfig, MasterConfig
from zdf.errors import ZdfError
from zdf.protocol import EXECUTOR_LIST

log = logging.getLogger(__name__)

META_CONNECT_TIMEOUT = 15.0


@click.command("master")
@config_options(MasterConfig)
@handle_errors
def master_cmd(config_path: str | None, **flags: Any) -> None:
    """Run a master (job manager, scheduler, executor liveness)."""
    from zdf.master.server import Master
    from zdf.metastore.client import MetaClient

    config = load_from_flags(MasterConfig, config_path, flags)
    setup_logging(config.log_level, config.log_file, f"master[{config.name}]", config.log_format)
    setup_security(config, "master", config.master_addr, config.heartbeat_addr)
    meta = MetaClient(config.meta_endpoints, timeout=config.rpc_timeout)
    _wait_for_metastore(meta, config.meta_endpoints)
    master = Master(config, meta)
    master.reactor.stop_on_signals(signal.SIGINT, signal.SIGTERM)
    observer = _observe("master", master)
    try:
        master.run()
    finally:
        if observer is not None:
            observer.close()
        master.close()
        meta.close()
        log.info("master stopped")
    if master.lost_leadership:
        raise SystemExit(3)


def _observe(role: str, process: Any) -> Any:
    """The process's HTTP endpoints (``zdf.observe``); a port that cannot be bound is a
    one-line error, after the process has closed its sockets."""
    from zdf.observe import attach

    try:
        return getattr(attach, f"observe_{role}")(process)
    except ZdfError:
        process.close()
        raise


def _wait_for_metastore(meta: Any, endpoints: list[str]) -> None:
    deadline = time.monotonic() + META_CONNECT_TIMEOUT
    while True:
        try:
            meta.status()
            return
        except ZdfError as exc:
            if time.monotonic() > deadline:
                raise ZdfError(f"metastore at {','.join(endpoints)} not reachable: {exc}") from None
            log.info("waiting for the metastore at %s", ",".join(endpoints))


@click.group("executor", invoke_without_command=True)
@config_options(ExecutorConfig)
@click.pass_context
@handle_errors
def executor_group(ctx: click.Context, /, config_path: str | None, **flags: Any) -> None:
    """Run an executor (with --config), or `zdf executor list`."""
    if ctx.invoked_subcommand is not None:
        return
    from zdf.executor.server import Executor

    config = load_from_flags(ExecutorConfig, config_path, flags)
    setup_logging(
        config.log_level, config.log_file, f"executor[{config.executor_id}]", config.log_format
    )
    setup_security(config, "executor", config.worker_addr)
    executor = Executor(config)
    executor.reactor.stop_on_signals(signal.SIGINT, signal.SIGTERM)
    observer = _observe("executor", executor)
    try:
        executor.run()
    finally:
        if observer is not None:
            observer.close()
        executor.close()
        log.info("executor stopped")


@executor_group.command("list")
@MASTER_OPTION
@TIMEOUT_OPTION
@FORMAT_OPTION
@handle_errors
def executor_list(master_addr: str, rpc_timeout: float, fmt: str) -> None:
    """List the executors the master knows, with their state."""
    with master_client(master_addr, rpc_timeout) as client:
        rows = client.call(EXECUTOR_LIST)
    if fmt == "json":
        print_json(rows)
        return
    print_table(
        "executors",
        ["id", "addr", "slots", "in use", "state", "last seen (s)", "pid"],
        [
            [
                *(
                    r.get(k, "")
                    for k in ("id", "addr", "slots", "used", "state", "last_seen_s", "pid")
                )
            ]
            for r in rows
        ],
        whole=("id", "pid"),
    )
