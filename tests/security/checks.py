"""What the security tests build and check alike: deeply nested values, one-line errors."""

from __future__ import annotations

import subprocess
from typing import Any


def nested(depth: int) -> Any:
    """A value nested ``depth`` maps deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"c": value}
    return value


def one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    """``out`` failed with one line on stderr, ``error: ...``, naming every word."""
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for word in words:
        assert word in lines[0], out.stderr
