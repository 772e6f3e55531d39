"""TOML configs as typed, frozen dataclasses.

Each field of a config class names its TOML key (kebab-case) and a parser in its
metadata. ``load_config`` reads the file, rejects unknown keys, then applies, in
order of precedence: command-line overrides, ``ZDF_<KEY>`` environment variables
(``keepalive-ttl`` -> ``ZDF_KEEPALIVE_TTL``), the file, the defaults. Any bad
input raises ``ConfigError`` with one line naming the file, the key and what is
allowed; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zdf.errors import ConfigError

Parser = Callable[[Any], Any]
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """'500ms', '10s', '2m', '1h' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration such as '500ms' or '10s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration such as '500ms' or '10s' (not negative)")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("a duration such as '500ms' or '10s'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_addr(value: Any) -> str:
    """'host:port' with a port in 1..65535 (tcp implied), or an ipc:// path."""
    text = str(value).strip()
    if text.startswith("ipc://"):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("an address host:port with a port from 1 to 65535")
    return text


def parse_http_addr(value: Any) -> str:
    """'host:port' for an HTTP listener, or empty (no listener)."""
    text = str(value).strip()
    if not text:
        return ""
    if "/" in text or " " in text:
        raise ValueError("an address host:port with a port from 1 to 65535, or empty (off)")
    try:
        return parse_addr(text)
    except ValueError:
        raise ValueError(
            "an address host:port with a port from 1 to 65535, or empty (off)"
        ) from None


def parse_addr_list(value: Any) -> list[str]:
    """A list of host:port, or one string of them separated by commas."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("a non-empty list of host:port addresses")
    return [parse_addr(item) for item in items if str(item).strip()]


def parse_optional_addr_list(value: Any) -> list[str]:
    """As ``parse_addr_list``, but "" or [] is allowed (an empty list)."""
    if value == "" or value == []:
        return []
    return parse_addr_list(value)


def parse_cluster(value: Any) -> dict[str, str]:
    """'a=host:port,b=host:port' or a table {a = "host:port"} -> {name: addr}."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str | list):
        items = value.split(",") if isinstance(value, str) else value
        pairs = []
        for item in items:
            name, sep, addr = str(item).strip().partition("=")
            if not sep or not name:
                raise ValueError("a list of name=host:port")
            pairs.append((name.strip(), addr))
    else:
        raise ValueError("a list of name=host:port")
    return {str(name): parse_addr(addr) for name, addr in pairs}


def parse_str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("a string")
    return str(value)


def parse_name(value: Any) -> str:
    text = parse_str(value)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text) or text in (".", ".."):
        raise ValueError("a name of 1-64 letters, digits, '.', '_' or '-' (not '.' or '..')")
    return text


def int_range(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"an integer from {low} to {high}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"an integer from {low} to {high}") from None
        if isinstance(value, float) and value != number:
            raise ValueError(f"an integer from {low} to {high}")
        if not low <= number <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return number

    return parse


def parse_resources(value: Any) -> dict[str, float]:
    """A table of resource name -> non-negative amount: ``{cpu = 4, gpu = 1}`` in TOML,
    or ``cpu=4,gpu=1`` (a flag or an environment variable)."""
    if isinstance(value, str):
        pairs = [p.partition("=") for p in value.strip().strip("{}").split(",") if p.strip()]
        try:
            value = {k.strip(): float(v) for k, _, v in pairs}
        except ValueError:
            raise ValueError("resources such as cpu=4,gpu=1") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ValueError("a table of resource names to non-negative numbers, e.g. {cpu = 4}")
    return {k: float(v) for k, v in value.items()}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(value: Any) -> int:
    """'2GiB', '512MiB', '1.5GB', '100k' or a number of bytes -> bytes (int)."""
    if isinstance(value, bool):
        raise ValueError("a size such as '256MiB', '2GiB' or a number of bytes")
    if isinstance(value, int | float):
        number, scale = float(value), 1
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError("a size such as '256MiB', '2GiB' or a number of bytes")
        unit = (match.group(2) or "").lower()
        scale = 1 << (10 * "bkmgt".index(unit[0])) if "i" in unit else _SIZE_UNITS[unit[:1]]
        number = float(match.group(1))
    if number < 0:
        raise ValueError("a size such as '256MiB' (not negative)")
    return int(number * scale)


def size_range(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"a size from {low} to {high} bytes, such as '256MiB'")
        return size

    return parse


def parse_memory_limit(value: Any) -> int:
    """'auto' (0: a share of this machine's memory per worker) or a size of at least 1 MiB."""
    if isinstance(value, str) and value.strip().lower() in ("auto", ""):
        return 0
    size = parse_size(value)
    if size and size < 1 << 20:
        raise ValueError("'auto' or a size of at least 1MiB, such as '2GiB'")
    return size


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


LOG_LEVEL = one_of("debug", "info", "warning", "error")
LOG_FORMAT = one_of("text", "json")


def key(name: str, parse: Parser, default: Any, help: str = "") -> Any:
    """Declare a config field: its TOML key, parser, default and help text."""
    meta = {"key": name, "parse": parse, "help": help}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def fields_of(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if "key" in f.metadata]


def env_name(toml_key: str) -> str:
    return "ZDF_" + toml_key.upper().replace("-", "_")


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_config(
    cls: type[T],
    path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a TOML file (or ``data``), the environment and overrides.

    ``overrides`` maps TOML keys to values; ``None`` values are ignored so that
    unset command-line flags fall through to the file.
    """
    env = os.environ if env is None else env
    source = path or "<config>"
    raw = dict(data) if data is not None else (read_toml(path) if path else {})
    known = {f.metadata["key"]: f for f in fields_of(cls)}
    for k in raw:
        if k not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{source}: unknown key {k!r} (allowed: {allowed})")
    values: dict[str, Any] = {}
    for toml_key, f in known.items():
        origin, value = source, raw.get(toml_key, dataclasses.MISSING)
        if env_name(toml_key) in env:
            origin, value = f"environment {env_name(toml_key)}", env[env_name(toml_key)]
        if overrides and overrides.get(toml_key) is not None:
            origin, value = f"flag --{toml_key}", overrides[toml_key]
        if value is dataclasses.MISSING:
            continue
        try:
            values[f.name] = f.metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(
                f"{origin}: key {toml_key!r}: expected {exc}, got {value!r}"
            ) from None
    try:
        obj = cls(**values)
    except TypeError as exc:
        missing = [
            f.metadata["key"]
            for f in fields_of(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in values
        ]
        raise ConfigError(f"{source}: missing required key {', '.join(missing) or exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


# ---------------------------------------------------------------------------
# The processes' configs


def parse_optional_addr(value: Any) -> str:
    """An address as ``parse_addr``, or "" (unset)."""
    return "" if str(value).strip() == "" else parse_addr(value)


def check_advertised(bind: str, advertise: str, bind_key: str, twin_key: str) -> None:
    """A wildcard bind (``0.0.0.0``) names no host others can dial: it needs its twin."""
    from zdf.wire.addresses import is_wildcard

    if is_wildcard(bind) and not advertise:
        raise ValueError(
            f"key {bind_key!r} binds every interface; set its advertised twin "
            f"{twin_key!r} to the address others dial"
        )
    if advertise and is_wildcard(advertise):
        raise ValueError(f"key {twin_key!r}: must name a host others can dial")


@dataclass(frozen=True)
class LogConfig:
    log_level: str = key("log-level", LOG_LEVEL, "info", "debug, info, warning or error")
    log_file: str = key("log-file", parse_str, "", "file to log to (default: standard error)")
    log_format: str = key("log-format", LOG_FORMAT, "text", "text, or json (one object a line)")
    http_addr: str = key(
        "http-addr", parse_http_addr, "", "host:port for /metrics, /health (and the dashboard)"
    )


@dataclass(frozen=True)
class SecurityConfig:
    security_dir: str = key(
        "security-dir", parse_str, "", "CURVE keys (zdf security init); none: loopback only"
    )
    insecure: bool = key(
        "insecure", parse_bool, False, "without security-dir, bind non-loopback addresses too"
    )
    max_message_depth: int = key(
        "max-message-depth",
        int_range(16, 256),
        32,
        "deepest nesting of a decoded message's body (deeper: refused with an error)",
    )


@dataclass(frozen=True)
class MetastoreConfig(LogConfig, SecurityConfig):
    name: str = key("name", parse_name, "meta-1", "this replica's name in initial-cluster")
    addr: str = key("addr", parse_addr, "127.0.0.1:10340", "address for clients")
    peer_addr: str = key("peer-addr", parse_addr, "127.0.0.1:10380", "address for peers")
    initial_cluster: dict[str, str] = key(
        "initial-cluster", parse_cluster, {}, "name=peer-addr for every replica"
    )
    data_dir: str = key("data-dir", parse_str, "/tmp/zdf-data/metastore", "LevelDB directory")
    election_timeout: float = key("election-timeout", parse_duration, 0.3, "Raft election timeout")
    heartbeat_interval: float = key(
        "heartbeat-interval", parse_duration, 0.05, "leader heartbeat interval"
    )
    snapshot_entries: int = key(
        "snapshot-entries", int_range(100, 10**9), 10000, "log entries kept before a snapshot"
    )
    max_leases: int = key("max-leases", int_range(32, 10**7), 10_000, "live leases at most")
    max_client_lease_ttl: float = key(
        "max-client-lease-ttl", parse_duration, 86400.0, "longest lease a non-master may take"
    )
    max_leases_per_client: int = key(
        "max-leases-per-client",
        int_range(1, 10**7),
        1000,
        "live leases one client connection may hold (masters: no limit but max-leases)",
    )
    max_meta_value_bytes: int = key(
        "max-meta-value-bytes",
        int_range(1024, 1 << 20),
        1 << 20,
        "largest value written outside the framework's /zdf/ keys",
    )
    advertise_addr: str = key(
        "advertise-addr", parse_optional_addr, "", "client address others dial (default: addr)"
    )
    advertise_peer_addr: str = key(
        "advertise-peer-addr",
        parse_optional_addr,
        "",
        "peer address others dial (default: peer-addr; initial-cluster names it)",
    )

    @property
    def public_addr(self) -> str:
        return self.advertise_addr or self.addr

    @property
    def public_peer_addr(self) -> str:
        return self.advertise_peer_addr or self.peer_addr

    def validate(self) -> None:
        check_advertised(self.addr, self.advertise_addr, "addr", "advertise-addr")
        check_advertised(
            self.peer_addr, self.advertise_peer_addr, "peer-addr", "advertise-peer-addr"
        )
        if self.heartbeat_interval * 2 > self.election_timeout:
            raise ValueError("key 'heartbeat-interval': must be at most half of 'election-timeout'")
        if self.initial_cluster and self.name not in self.initial_cluster:
            raise ValueError(f"key 'initial-cluster': does not name this replica {self.name!r}")
        if len(self.initial_cluster) not in (0, 1, 3, 5):
            raise ValueError("key 'initial-cluster': expected 1, 3 or 5 replicas")

    @property
    def cluster(self) -> dict[str, str]:
        return self.initial_cluster or {self.name: self.public_peer_addr}


@dataclass(frozen=True)
class MasterConfig(LogConfig, SecurityConfig):
    name: str = key("name", parse_name, "master-1", "this master's name")
    master_addr: str = key("master-addr", parse_addr, "127.0.0.1:10240", "ROUTER address")
    heartbeat_addr: str = key("heartbeat-addr", parse_addr, "127.0.0.1:10250", "PUB address")
    meta_endpoints: list[str] = key(
        "meta-endpoints", parse_addr_list, ["127.0.0.1:10340"], "metastore client addresses"
    )
    keepalive_ttl: float = key(
        "keepalive-ttl", parse_duration, 1.0, "silence after which an executor is dead"
    )
    keepalive_interval: float = key("keepalive-interval", parse_duration, 0.2, "heartbeat interval")
    rpc_timeout: float = key("rpc-timeout", parse_duration, 5.0, "deadline for one request")
    data_dir: str = key("data-dir", parse_str, "/tmp/zdf-data/master", "scratch directory")
    election_ttl: float = key(
        "election-ttl", parse_duration, 1.0, "lease of the leading master (failover time)"
    )
    allow_pickle: bool = key(
        "allow-pickle", parse_bool, False, "accept pickled functions from clients"
    )
    max_queued_fn_per_client: int = key(
        "max-queued-fn-per-client", int_range(1, 10**8), 50_000, "function tasks one client queues"
    )
    fn_pipeline_depth: int = key(
        "fn-pipeline-depth",
        int_range(0, 100_000),
        64,
        "function tasks a worker may hold ahead of their inputs (0: none, see docs/graphs.md)",
    )
    max_job_spec_bytes: int = key(
        "max-job-spec-bytes", int_range(1024, 1 << 30), 4 << 20, "largest job spec (msgpack bytes)"
    )
    max_job_tasks: int = key(
        "max-job-tasks", int_range(1, 10**7), 1_000_000, "most tasks in one job"
    )
    max_value_bytes: int = key(
        "max-value-bytes",
        size_range(1 << 20, 1 << 40),
        1 << 30,
        "largest argument or result of one function task (e.g. '1GiB')",
    )
    client_grace: float = key(
        "client-grace",
        parse_duration,
        30.0,
        "a function client silent this long is gone: its results are dropped",
    )
    job_retention: float = key(
        "job-retention",
        parse_duration,
        7 * 24 * 3600.0,
        "ended jobs are forgotten this long after (0: never)",
    )
    advertise_addr: str = key(
        "advertise-addr",
        parse_optional_addr,
        "",
        "ROUTER address others dial (default: master-addr)",
    )
    advertise_heartbeat_addr: str = key(
        "advertise-heartbeat-addr",
        parse_optional_addr,
        "",
        "PUB address others dial (default: heartbeat-addr)",
    )

    @property
    def public_addr(self) -> str:
        return self.advertise_addr or self.master_addr

    @property
    def public_heartbeat_addr(self) -> str:
        return self.advertise_heartbeat_addr or self.heartbeat_addr

    def validate(self) -> None:
        if self.keepalive_interval >= self.keepalive_ttl:
            raise ValueError("key 'keepalive-interval': must be shorter than 'keepalive-ttl'")
        check_advertised(self.master_addr, self.advertise_addr, "master-addr", "advertise-addr")
        check_advertised(
            self.heartbeat_addr,
            self.advertise_heartbeat_addr,
            "heartbeat-addr",
            "advertise-heartbeat-addr",
        )


@dataclass(frozen=True)
class ExecutorConfig(LogConfig, SecurityConfig):
    name: str = key("name", parse_str, "", "executor id (default: derived from worker-addr)")
    join: list[str] = key(
        "join",
        parse_optional_addr_list,
        ["127.0.0.1:10240"],
        "master addresses (empty: find them in the metastore's discovery records)",
    )
    worker_addr: str = key(
        "worker-addr", parse_addr, "127.0.0.1:10241", "this executor's address (heartbeat PUB)"
    )
    meta_endpoints: list[str] = key(
        "meta-endpoints", parse_addr_list, ["127.0.0.1:10340"], "metastore client addresses"
    )
    keepalive_ttl: float = key(
        "keepalive-ttl", parse_duration, 1.0, "silence after which the master is lost"
    )
    keepalive_interval: float = key("keepalive-interval", parse_duration, 0.2, "heartbeat interval")
    session_ttl: float = key(
        "session-ttl", parse_duration, 10.0, "lease TTL of the discovery record"
    )
    slots: int = key(
        "slots",
        int_range(1, 4096),
        32,
        "pipeline slices (slot-sharing groups) or function tasks it runs at once",
    )
    workers: int = key(
        "workers", int_range(0, 256), 0, "worker processes hosting the tasks (0: one per CPU)"
    )
    worker_sockets: int = key(
        "worker-sockets",
        int_range(0, 1 << 16),
        0,
        "file descriptors a worker process lets its tasks use (0: its limit less a reserve)",
    )
    data_dir: str = key("data-dir", parse_str, "/tmp/zdf-data/executor", "scratch directory (ipc)")
    allow_pickle: bool = key(
        "allow-pickle", parse_bool, False, "run pickled functions sent by clients (see README)"
    )
    resources: dict[str, float] = key(
        "resources",
        parse_resources,
        {},
        "what function tasks may ask of it, e.g. {cpu = 4, gpu = 1} (cpu: workers by default)",
    )
    advertise_addr: str = key(
        "advertise-addr",
        parse_optional_addr,
        "",
        "worker-addr as others dial it; its host is also published for the data pipes",
    )
    memory_limit: int = key(
        "memory-limit",
        parse_memory_limit,
        0,
        "results one worker keeps in memory before spilling, e.g. '2GiB' (auto: a share of RAM)",
    )
    same_host_ipc: bool = key(
        "same-host-ipc",
        parse_bool,
        True,
        "data pipes between processes of this host over ipc:// beside tcp:// (private run dir)",
    )

    def validate(self) -> None:
        if self.keepalive_interval >= self.keepalive_ttl:
            raise ValueError("key 'keepalive-interval': must be shorter than 'keepalive-ttl'")
        check_advertised(self.worker_addr, self.advertise_addr, "worker-addr", "advertise-addr")

    @property
    def public_addr(self) -> str:
        return self.advertise_addr or self.worker_addr

    @property
    def executor_id(self) -> str:
        return self.name or "exec-" + self.public_addr.replace(":", "-").replace("/", "_")
