"""The benchmark job: its config (``BenchConfig``) and its expansion into tasks.

The stages are a dataflow graph on the public operator API (``zdf.jobs.benchflow``,
``engine="flow"``, what every bench job file gets); ``engine="classic"`` builds
them from the first, hand-wired operators instead, for same-run comparisons.
The shape below is the same for both.

``build_bench_job`` turns a bench TOML (``configs/bench-example.toml``) into a
``JobSpec`` of ``table-num`` producers, one binlog/receive/syncer/sink chain per
stream and one coordinator for the DDL barrier: 10 producers + 3 x 4 stream
tasks + 1 coordinator = 23 tasks for the example.
Every task's params carry the whole bench config (small) plus its own index, so
an operator needs nothing but its params.

Slots (``TaskSpec.slot``): a stream's four stages are one pipeline slice and
share one slot; the producers are spread over the slices (producer t joins
slice t mod streams) and the coordinator joins slice 0, so the job takes one
slot per stream whatever its number of tables: the producers' work is the same
records, split in more ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zdf.config import (
    int_range,
    key,
    load_config,
    one_of,
    parse_addr,
    parse_duration,
    parse_name,
    parse_str,
)
from zdf.jobs.benchflow import flow_tasks
from zdf.jobs.spec import JobSpec, TaskSpec

OPS = "zdf.runtime.bench"
MAX_STREAMS = 256


def parse_servers(value: Any) -> list[str]:
    """A list of host:port (one binlog stream each) or a number of streams."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_STREAMS:
            raise ValueError(f"a list of host:port addresses or a number from 1 to {MAX_STREAMS}")
        return [f"stream-{i}" for i in range(value)]
    if isinstance(value, str) and value.strip().isdigit():
        return parse_servers(int(value))
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_STREAMS:
        raise ValueError(f"a list of host:port addresses or a number from 1 to {MAX_STREAMS}")
    try:
        return [parse_addr(item) for item in items]
    except ValueError:
        raise ValueError(
            f"a list of host:port addresses or a number from 1 to {MAX_STREAMS}"
        ) from None


def parse_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a number of records per second (0 = as fast as possible)")
    try:
        rate = float(value)
    except ValueError:
        raise ValueError("a number of records per second (0 = as fast as possible)") from None
    if rate < 0:
        raise ValueError("a number of records per second (0 = as fast as possible)")
    return rate


@dataclass(frozen=True)
class BenchConfig:
    """The keys of a bench job file (the original prototype's plus zdf's)."""

    flow_id: str = key("flow-id", parse_name, "", "the job's name and output directory")
    job_type: str = key("job-type", one_of("bench"), "bench", "the job builder")
    table_num: int = key("table-num", int_range(1, 1000), 10, "tables (one producer each)")
    servers: list[str] = key(
        "servers",
        parse_servers,
        ["stream-0", "stream-1", "stream-2"],
        "binlog streams: host:port names or a count",
    )
    rcd_cnt: int = key("rcd-cnt", int_range(1, 10**10), 100000, "data records per table")
    ddl_freq: int = key(
        "ddl-freq", int_range(1, 10**10), 1000, "a DDL before every pk that is a multiple"
    )
    sink_dir: str = key("sink-dir", parse_str, "/tmp/dataflow", "where sinks write <flow-id>/")
    batch_size: int = key("batch-size", int_range(1, 1_000_000), 4096, "pks per producer batch")
    rate: float = key("rate", parse_rate, 0.0, "records/s per producer (0 = max)")
    checkpoint_interval: float = key(
        "checkpoint-interval", parse_duration, 1.0, "between checkpoints"
    )
    window: int = key("window", int_range(1, 1024), 8, "batches in flight per data pipe")
    placement_timeout: float = key(
        "placement-timeout",
        parse_duration,
        0.0,
        "fail the job if it cannot be placed this long (0: wait for room)",
    )

    def validate(self) -> None:
        if not self.flow_id:
            raise ValueError(
                "missing required key 'flow-id' (a name of letters, digits, '.', '_' or '-')"
            )

    @property
    def streams(self) -> int:
        return len(self.servers)

    def params(self) -> dict[str, Any]:
        return {
            "flow-id": self.flow_id,
            "tables": self.table_num,
            "streams": self.streams,
            "rcd-cnt": self.rcd_cnt,
            "ddl-freq": self.ddl_freq,
            "batch-size": self.batch_size,
            "rate": self.rate,
            "sink-dir": self.sink_dir,
            "window": self.window,
            "checkpoint-interval": self.checkpoint_interval,
        }


def load_bench_config(data: dict[str, Any], source: str) -> BenchConfig:
    """Validate a bench job file's contents; ``ConfigError`` names ``source`` and the key."""
    return load_config(BenchConfig, path=source, data=data, env={})


ENGINES = ("flow", "classic")
"""How the stages are built: ``flow``, the dataflow graph of ``zdf.jobs.benchflow`` on
the public operator API (what job files get); ``classic``, the first operators, kept
for the same-run comparison in ``bench/test_bench_engines_bench.py``."""


def build_bench_job(data: dict[str, Any], source: str, *, engine: str = "flow") -> JobSpec:
    cfg = load_bench_config(data, source)
    coordinator = TaskSpec(
        "coordinator",
        "coordinator",
        f"{OPS}.coordinator:Coordinator",
        {**cfg.params(), "sockets": 2 * cfg.streams + 2},
        slot="stream-0",
    )
    if engine == "flow":
        tasks = flow_tasks(cfg, coordinator)
    elif engine == "classic":
        tasks = classic_tasks(cfg, coordinator)
    else:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    settings = {
        "flow-id": cfg.flow_id,
        "sink-dir": cfg.sink_dir,
        "checkpoint-interval": cfg.checkpoint_interval,
        "source": source,
        "expected_records": cfg.table_num * cfg.rcd_cnt,
    }
    if cfg.placement_timeout > 0:
        settings["placement-timeout"] = cfg.placement_timeout
    return JobSpec(cfg.flow_id, "bench", tasks, settings)


def classic_tasks(cfg: BenchConfig, coordinator: TaskSpec) -> list[TaskSpec]:
    """The stages as the first benchmark operators (``zdf.runtime.bench.producer`` ...)."""
    common = cfg.params()
    tasks = [coordinator]
    # Each pipeline stage ends when the stage after it is done for good (its done flag),
    # so that a task restarted late can still replay its input (zdf.runtime.operator).
    binlogs = [f"binlog-{s}" for s in range(cfg.streams)]
    tasks += [
        TaskSpec(
            f"producer-{t}",
            "producer",
            f"{OPS}.producer:Producer",
            {
                **common,
                "table": t,
                "done-after": binlogs,
                "sockets": cfg.streams + 1,  # its port and one peer per stream
                # Paced producers share one schedule: the binlogs merge them in rounds.
                **({"pace-with": "producer-0"} if t and cfg.rate > 0 else {}),
            },
            slot=f"stream-{t % cfg.streams}",
        )
        for t in range(cfg.table_num)
    ]
    # One message per binlog round is about tables * batch-size / streams rows.
    round_rows = max(cfg.batch_size, cfg.table_num * cfg.batch_size // cfg.streams + cfg.table_num)
    chains = []
    for s, server in enumerate(cfg.servers):
        chain = {**common, "stream": s, "max-message-rows": round_rows}
        # A stream's stages are one placement group: one executor, one worker process,
        # so the batches between them stay in memory (zdf.wire.inproc).
        group = f"stream-{s}"
        chains.append(
            [
                TaskSpec(
                    f"binlog-{s}",
                    "binlog",
                    f"{OPS}.binlog:Binlog",
                    {
                        **chain,
                        "server": server,
                        "done-after": [f"receive-{s}"],
                        "sockets": cfg.table_num + 2,  # a pipe from every producer
                    },
                    group,
                ),
                TaskSpec(
                    f"receive-{s}",
                    "receive",
                    f"{OPS}.receive:Receive",
                    {
                        **chain,
                        "input": {"task": f"binlog-{s}", "port": "stream", "channel": 0},
                        "done-after": [f"syncer-{s}"],
                        "sockets": 3,
                    },
                    group,
                ),
                TaskSpec(
                    f"syncer-{s}",
                    "syncer",
                    f"{OPS}.syncer:Syncer",
                    {
                        **chain,
                        "input": {"task": f"receive-{s}", "port": "out", "channel": 0},
                        "done-after": [f"sink-{s}"],
                        "sockets": cfg.streams + 3,  # and a barrier link per stream
                    },
                    group,
                ),
                TaskSpec(f"sink-{s}", "sink", f"{OPS}.sink:Sink", {**chain, "sockets": 3}, group),
            ]
        )
    # Stage by stage across the streams: placements that deal tasks in order (the
    # scheduler over executors, a worker pool over its processes) start each
    # stream's group where there is most room, rather than all on the same one.
    tasks += [task for stage in zip(*chains, strict=True) for task in stage]
    return tasks
