"""One error hierarchy for the whole project.

    ZdfError
    ├── ConfigError            a bad config file, key or value (exit code 2)
    ├── ProtocolError          a frame we cannot decode or do not accept
    │   └── MessageTooLarge
    ├── RemoteError            the peer answered with an error; carries its type and text
    │   └── NotLeader          the peer is not the leader; carries a leader hint
    ├── Timeout                no answer within the deadline
    │   └── UnknownOutcome     a write may or may not have been applied
    ├── KeyNotFound
    ├── CompactedError         a watch or read asked for a revision that is gone
    ├── LeaseNotFound
    ├── JobError               a bad job spec, an unknown job, a failed job
    ├── Canceled
    ├── PermissionDenied       the caller's role may not do this (CURVE, zdf.wire.security)
    ├── StaleEpoch             a command from a master of another epoch (fenced off)
    └── LimitExceeded          a request over a configured limit (queue, leases, size)

Errors raised inside a handler travel back as data (``to_wire``) and are rebuilt
on the caller as the same class where it is known (``from_wire``), else as
``RemoteError`` with the remote type name and text.
"""

from __future__ import annotations

from typing import Any


class ZdfError(Exception):
    """Root of every error zdf raises on purpose."""

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message, "data": self.data}


class ConfigError(ZdfError):
    """A bad config file, key or value; the message is one line for the user."""


class ProtocolError(ZdfError):
    """A frame that cannot be decoded or is not acceptable."""


class MessageTooLarge(ProtocolError):
    pass


class RemoteError(ZdfError):
    """An error reported by a peer, with the peer's type name."""

    def __init__(self, message: str = "", remote_type: str | None = None, **data: Any) -> None:
        super().__init__(message, **data)
        self.remote_type = remote_type or type(self).__name__

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.remote_type, "message": self.message, "data": self.data}


class NotLeader(RemoteError):
    """The peer is not the leader; ``data['leader']`` is a hint (an address) or None."""


class Timeout(ZdfError):
    pass


class UnknownOutcome(Timeout):
    """A write timed out: it may or may not have been applied."""


class KeyNotFound(ZdfError):
    pass


class CompactedError(ZdfError):
    pass


class LeaseNotFound(ZdfError):
    pass


class JobError(ZdfError):
    pass


class Canceled(ZdfError):
    pass


class PermissionDenied(ZdfError):
    """A peer's role may not do what it asked (an error reply, never a crash)."""


class StaleEpoch(ZdfError):
    """A command from a master other than the one this process follows (a deposed one)."""


class LimitExceeded(ZdfError):
    """A request over one of the configured limits; the request is not kept."""


_BY_NAME: dict[str, type[ZdfError]] = {}


def _register(cls: type[ZdfError]) -> None:
    _BY_NAME[cls.__name__] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(ZdfError)


def worker_lost(message: str) -> dict[str, str]:
    """A function task's failure (as a worker describes one) when its worker died."""
    return {"type": "WorkerLost", "module": "zdf.errors", "message": message, "traceback": ""}


def from_wire(err: Any) -> ZdfError:
    """Rebuild an error sent by a peer; unknown shapes become a RemoteError."""
    if not isinstance(err, dict):
        return RemoteError(repr(err), remote_type="ZdfError")
    name = str(err.get("type", "ZdfError"))
    message = str(err.get("message", ""))
    data = err.get("data") if isinstance(err.get("data"), dict) else {}
    assert isinstance(data, dict)
    cls = _BY_NAME.get(name)
    safe = {str(k): v for k, v in data.items()}
    if cls is None or cls is ZdfError:
        return RemoteError(message, remote_type=name, **safe)
    if issubclass(cls, RemoteError):
        return cls(message, remote_type=name, **safe)
    try:
        return cls(message, **safe)
    except TypeError:
        return RemoteError(message, remote_type=name, **safe)
