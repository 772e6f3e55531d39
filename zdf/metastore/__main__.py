"""``python -m zdf.metastore --config FILE``: the server without loading the rest of the CLI."""

from zdf.cli.metastore_cmd import metastore_cmd

if __name__ == "__main__":
    metastore_cmd(prog_name="zdf metastore")
