"""The ``zdf`` command line: a click group; subcommands live in their own modules."""

from __future__ import annotations

import click

from zdf.cli.demo import demo
from zdf.cli.jobs_cmd import cluster_status, job_group, submit_job
from zdf.cli.processes import executor_group, master_cmd


@click.group()
@click.version_option(package_name="zdf")
def main() -> None:
    """zdf: a ZeroMQ low-latency cluster runtime."""


main.add_command(master_cmd)
main.add_command(executor_group)
main.add_command(submit_job)
main.add_command(job_group)
main.add_command(cluster_status)
main.add_command(demo)

from zdf.cli.meta import meta_group  # noqa: E402
from zdf.cli.metastore_cmd import metastore_cmd  # noqa: E402

main.add_command(meta_group)
main.add_command(metastore_cmd)

from zdf.cli.verify_sink import verify_sink  # noqa: E402

main.add_command(verify_sink)

from zdf.cli.verify_flow import verify_flow_cmd  # noqa: E402

main.add_command(verify_flow_cmd)

from zdf.cli.security_cmd import security_group  # noqa: E402

main.add_command(security_group)

from zdf.cli.logs_cmd import logs_cmd  # noqa: E402

main.add_command(logs_cmd)

from zdf.cli.configs_cmd import configs_cmd  # noqa: E402

main.add_command(configs_cmd)

if __name__ == "__main__":
    main()
