"""The README's map-reduce over numpy arrays ("Task graphs"), run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    text = README.read_text()
    section = text.split("### Task graphs: futures as arguments", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's task-graph section has no Python block"
    return match.group(1)


def test_the_readme_map_reduce_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    code = readme_snippet()
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.strip()
    assert printed == str(sum(i * i for i in range(800_000)))
    assert printed in code  # the comment in the README shows what it prints
