"""Run a metastore server as a child process (tests, benchmarks, local clusters).

The server runs in a fresh interpreter (``python -m zdf.metastore``, the same
command as ``zdf metastore``), never in a fork of the caller, because LevelDB
is not fork-safe. ``start`` returns once the server answers ``status``;
``stop``/``kill`` act on the pid and always reap the child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO

from zdf.errors import ZdfError
from zdf.metastore.client import MetaClient
from zdf.wire.sockets import free_port

HOST = "127.0.0.1"


class MetastoreProcess:
    def __init__(
        self,
        data_dir: str,
        addr: str | None = None,
        *,
        name: str = "meta-1",
        log_path: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.addr = addr or f"{HOST}:{free_port()}"
        self.name = name
        self.log_path = log_path or os.path.join(data_dir + ".log")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "zdf.metastore",
            "--name",
            self.name,
            "--addr",
            self.addr,
            "--peer-addr",
            f"{HOST}:{free_port()}",
            "--data-dir",
            self.data_dir,
            *self.extra_args,
        ]

    def start(self, timeout: float = 15.0) -> MetastoreProcess:
        """Start the server and wait until it answers (``ZdfError`` if it does not)."""
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with MetaClient(self.addr, timeout=0.5) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ZdfError(
                        f"metastore exited with {self.proc.returncode}: {self.log_tail()}"
                    )
                try:
                    client.status()
                    return
                except ZdfError:
                    if time.monotonic() > deadline:
                        raise ZdfError(f"metastore at {self.addr} did not start in time") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> MetastoreProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
