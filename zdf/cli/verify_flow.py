"""``zdf verify-flow --config JOB``: check a dataflow job's output (``zdf.dataflow.verify``)."""

from __future__ import annotations

import click

from zdf.cli.common import print_json
from zdf.config import read_toml
from zdf.errors import ConfigError


@click.command("verify-flow")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="the dataflow job file (e.g. configs/wordcount.toml)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def verify_flow_cmd(config_path: str, fmt: str) -> None:
    """Check that a dataflow job's FileSink output is complete and exact (exit 0 only then)."""
    from zdf.dataflow.verify import verify_flow
    from zdf.jobs import build_job

    try:
        spec = build_job(read_toml(config_path), config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None
    report = verify_flow(spec)
    if fmt == "json":
        print_json(
            {
                "ok": report.ok,
                "sinks": report.checked,
                "rows": report.rows,
                "problems": report.problems,
            }
        )
    else:
        state = "OK" if report.ok else "FAILED"
        click.echo(f"verify-flow {state}: {report.rows} rows in sinks {', '.join(report.checked)}")
        for line in report.problems:
            click.echo(f"  - {line}")
    raise SystemExit(0 if report.ok else 1)
