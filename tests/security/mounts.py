"""A private mount namespace for a test: a small tmpfs or a read-only folder that only
the processes the test starts in it can see.

``MountNamespace`` starts a holder process (``unshare -m``, propagation private)
that mounts what it is asked to and then waits on its standard input. Processes
run inside it with ``nsenter`` (``command``). The mounts exist only in that
namespace, which ends with its last process: closing the holder's input ends it
(and a test that dies closes it too), so no mount outlives the test. Needs root
(or CAP_SYS_ADMIN) and util-linux; otherwise ``pytest.skip`` says why.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
from collections.abc import Sequence

import pytest


class MountNamespace:
    def __init__(self, script: str, timeout: float = 10.0) -> None:
        """``script``: shell commands that mount (``set -e``), run in the new namespace."""
        if os.geteuid() != 0:
            pytest.skip("a private mount namespace needs root (unshare -m)")
        if not (shutil.which("unshare") and shutil.which("nsenter")):
            pytest.skip("a private mount namespace needs util-linux's unshare and nsenter")
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"set -e; {script}; echo ready; exec cat",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        ready, _, _ = select.select([self.holder.stdout], [], [], timeout)
        line = self.holder.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            err = self.holder.stderr.read().decode(errors="replace") if self.holder.stderr else ""
            pytest.skip(f"cannot make a private mount namespace here: {err.strip() or 'timeout'}")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (nsenter execs it: same pid)."""
        return ["nsenter", "--target", str(self.holder.pid), "--mount", "--", *argv]

    def run(self, script: str) -> None:
        """Shell commands inside the namespace (e.g. a remount), checked."""
        subprocess.run(self.command(["sh", "-c", script]), check=True, timeout=30)

    def close(self) -> None:
        if self.holder.stdin is not None and not self.holder.stdin.closed:
            self.holder.stdin.close()
        try:
            self.holder.wait(10)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait(10)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> MountNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
