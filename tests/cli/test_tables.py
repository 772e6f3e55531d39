"""Tables of the read commands: the ids a user copies into the next command are whole."""

from __future__ import annotations

import io
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from zdf import protocol as P
from zdf.cli import jobs_cmd
from zdf.cli.common import print_table

pytestmark = pytest.mark.timeout(20)

JOB_IDS = ["job-20261128-142458-6d3faa", "job-20261128-142522-d696dd"]


class FakeClient:
    """Answers ``job list`` as a master with two jobs does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, op: str, body: Any = None) -> Any:
        assert op == P.JOB_LIST
        return [
            {
                "id": job_id,
                "name": "a-long-job-name",
                "type": "function",
                "state": "finished",
                "tasks": 23,
                "running": 0,
                "finished": 23,
            }
            for job_id in JOB_IDS
        ]


def test_job_list_piped_shows_whole_job_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_cmd, "master_client", FakeClient)
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(jobs_cmd.job_group, ["list", "--master-addr", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    for job_id in JOB_IDS:
        assert job_id in result.output
    assert "…" not in result.output  # nor anything else shortened: a pipe has no width


def test_a_narrow_terminal_shortens_other_columns_never_the_id() -> None:
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, color_system=None)
    rows = [[job_id, "a-long-job-name", "function", "finished", 23, 0, 23] for job_id in JOB_IDS]
    columns = ["id", "name", "type", "state", "tasks", "running", "finished"]
    print_table("jobs", columns, rows, whole=("id",), console=console)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 60
    for job_id in JOB_IDS:
        assert job_id in text
