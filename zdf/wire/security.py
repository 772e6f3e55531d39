"""CURVE keys, the ZAP allow-list and protected mode: who may talk to this process.

Theory of operation. A *security dir* (``zdf security init DIR``) holds one CURVE
key pair per role — ``metastore``, ``master``, ``executor``, ``client`` — as
pyzmq ``zmq.auth`` certificate files (``ROLE.key`` public, ``ROLE.key_secret``
secret, mode 0600, the dir 0700). A process loads it once for its own role
(``install(load(dir, role))``); from then on every tcp:// socket that
``zdf.wire.sockets.make_socket`` creates is CURVE:

* a socket that *binds* is a CURVE server with its own role's key pair; a ZAP
  handler (pyzmq's ``ThreadAuthenticator``, one per process) lets in only the
  public keys found in the dir and sets each connection's ``User-Id`` to the
  peer's role, which ``zdf.wire.rpc.Channel`` reads per message and checks
  against the operation's role table. A socket may narrow who connects at all
  (``allow=("executor",)``): that becomes its ZAP domain.
* a socket that *connects* proves its own role's key and checks that the
  server holds the secret key of the role it expects (``server_role``; by
  default its own role, as between metastore peers or workers' data pipes).

ipc:// and inproc:// endpoints stay plain: they never leave the host and their
directories are private (0700) to the user running zdf.

Without a security dir a process is in *protected mode*: it binds loopback
addresses only (``check_bind``) unless ``insecure = true`` is set, when it binds
anywhere and logs a warning.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import threading
from dataclasses import dataclass

import zmq
from zmq.auth.certs import create_certificates, load_certificate
from zmq.auth.thread import ThreadAuthenticator

from zdf.errors import ConfigError
from zdf.files import private_dir

log = logging.getLogger(__name__)

ROLES = ("metastore", "master", "executor", "client")
ANY_ROLE = frozenset(ROLES)
# Who may connect at all, for sockets that serve one kind of peer (``make_socket(allow=)``).
PEERS = frozenset({"metastore"})  # the metastore's peer port
MASTERS = frozenset({"master"})  # an executor's heartbeat PUB
EXECUTORS = frozenset({"executor"})  # a client's result socket, data pipes
CLIENTS = frozenset({"client"})  # a worker's port for tasks under a lease
DOMAIN_PREFIX = "zdf:"
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


# ---------------------------------------------------------------------------
# The dir on disk


def init_dir(path: str, roles: tuple[str, ...] = ROLES, *, rotate: bool = False) -> list[str]:
    """Create ``path`` (0700) with a key pair per role; return the files written.

    An existing role's keys are kept unless ``rotate`` (then they are replaced:
    every process of that role and every peer that knows it must be restarted)."""
    for role in roles:
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    private_dir(path)
    written = []
    old_umask = os.umask(0o077)  # no secret is ever readable by others, not even for a moment
    try:
        for role in roles:
            public, secret = (os.path.join(path, role + ext) for ext in (".key", ".key_secret"))
            if os.path.lexists(secret) and not rotate:
                continue
            for name in (public, secret):
                if os.path.lexists(name):
                    os.unlink(name)
            create_certificates(path, role)
            os.chmod(secret, SECRET_MODE)
            os.chmod(public, PUBLIC_MODE)
            written += [public, secret]
    finally:
        os.umask(old_umask)
    return written


@dataclass(frozen=True)
class SecurityContext:
    """This process's role and keys, and the public key of every role it knows."""

    directory: str
    role: str
    public_key: bytes
    secret_key: bytes
    public_keys: dict[str, bytes]  # role -> z85 public key
    roles_by_key: dict[bytes, str]  # z85 public key -> role

    def server_key(self, role: str) -> bytes:
        key = self.public_keys.get(role)
        if key is None:
            raise ConfigError(f"{self.directory}: no public key for role {role!r} ({role}.key)")
        return key


def load(directory: str, role: str) -> SecurityContext:
    """Read a security dir for ``role``; any problem is one ``ConfigError`` line."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    directory = os.path.abspath(directory)
    try:
        info = os.stat(directory)
    except OSError:
        raise ConfigError(f"security dir {directory}: does not exist (zdf security init)") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"security dir {directory}: not a directory")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        # Someone else's dir (a planted /tmp path) could hold keys they know.
        raise ConfigError(f"security dir {directory}: not ours alone (owner uid {info.st_uid})")
    secret_file = os.path.join(directory, role + ".key_secret")
    public_keys: dict[str, bytes] = {}
    for name in ROLES:
        path = os.path.join(directory, name + ".key")
        if os.path.exists(path):
            public_keys[name] = _read_key(path)[0]
    try:
        fd = os.open(secret_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{secret_file}: cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        secret_info = os.fstat(fh.fileno())
    mode = stat.S_IMODE(secret_info.st_mode)
    if secret_info.st_uid != os.getuid():
        raise ConfigError(f"{secret_file}: owned by another user (uid {secret_info.st_uid})")
    if mode & 0o077:
        raise ConfigError(f"{secret_file}: readable by others (mode {mode:o}; chmod 600 it)")
    public, secret = _read_key(secret_file)
    if secret is None:
        raise ConfigError(f"{secret_file}: holds no secret key")
    public_keys[role] = public
    roles_by_key: dict[bytes, str] = {}
    for name, key in public_keys.items():
        if key in roles_by_key:
            raise ConfigError(f"{directory}: roles {roles_by_key[key]} and {name} share a key")
        roles_by_key[key] = name
    return SecurityContext(directory, role, public, secret, public_keys, roles_by_key)


def _read_key(path: str) -> tuple[bytes, bytes | None]:
    try:
        return load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a zmq certificate: {exc}") from None


# ---------------------------------------------------------------------------
# The process-wide state that make_socket consults

_current: SecurityContext | None = None
_insecure = False
_authenticator: _RoleAuthenticator | None = None
_lock = threading.Lock()


def install(ctx: SecurityContext | None, *, insecure: bool = False) -> None:
    """Use ``ctx`` for every socket made from now on (None: protected mode)."""
    global _current, _insecure
    _current = ctx
    _insecure = insecure
    if ctx is None and insecure:
        log.warning("insecure = true: no CURVE; anyone who reaches a port can run code here")


def configure(security_dir: str, role: str, *, insecure: bool = False) -> SecurityContext | None:
    """What every process does at start with its ``security-dir`` and ``insecure`` keys."""
    ctx = load(security_dir, role) if security_dir else None
    install(ctx, insecure=insecure)
    return ctx


def current() -> SecurityContext | None:
    return _current


def is_insecure() -> bool:
    return _insecure


def check_bind(url: str) -> None:
    """A tcp:// bind names an IP address; in protected mode (no keys, not insecure)
    a loopback one."""
    if not url.startswith("tcp://"):
        return
    host = url[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return
    try:
        loopback = host != "*" and ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"cannot bind {url}: {host!r} is not an IP address") from None
    if not loopback and _current is None and not _insecure:
        raise ConfigError(
            f"refusing to bind {url} without a security dir (set security-dir, or insecure = true)"
        )


def secure(
    sock: zmq.Socket[bytes],
    url: str,
    *,
    server: bool,
    server_role: str | None,
    allow: frozenset[str] | None,
) -> bool:
    """Make ``sock`` CURVE when keys are installed and ``url`` is tcp://; say if it did."""
    ctx = _current
    if ctx is None or not url.startswith("tcp://"):
        return False
    sock.curve_secretkey = ctx.secret_key
    sock.curve_publickey = ctx.public_key
    if server:
        sock.zap_domain = _domain(allow or ANY_ROLE).encode()
        sock.curve_server = True
    else:
        sock.curve_serverkey = ctx.server_key(server_role or ctx.role)
    return True


def _domain(allow: frozenset[str]) -> str:
    domain = DOMAIN_PREFIX + ",".join(sorted(allow))
    auth = _authenticator
    if auth is None or domain not in auth.credentials_providers:
        with _lock:
            _start_authenticator().configure_curve_callback(domain, _Allowed(allow))
    return domain


def _start_authenticator() -> _RoleAuthenticator:
    global _authenticator
    if _authenticator is None or not _authenticator.is_alive():
        auth = _RoleAuthenticator(zmq.Context.instance())
        auth.start()
        _authenticator = auth
    return _authenticator


def role_of_key(z85_key: bytes) -> str | None:
    ctx = _current
    return None if ctx is None else ctx.roles_by_key.get(z85_key)


@dataclass(frozen=True)
class _Allowed:
    """ZAP credentials for one domain: a known key whose role is in ``roles``."""

    roles: frozenset[str]

    def callback(self, domain: str, key: bytes) -> bool:
        role = role_of_key(key)
        if role is None or role not in self.roles:
            log.warning("refused a CURVE peer (key %s, role %s) on %s", key[:8], role, domain)
            return False
        return True


class _RoleAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, with the peer's role as the connection's User-Id."""

    def curve_user_id(self, client_public_key: bytes) -> str:
        return role_of_key(zmq.utils.z85.encode(client_public_key)) or "?"
