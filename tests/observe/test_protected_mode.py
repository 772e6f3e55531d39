"""The HTTP port obeys protected mode as the ZeroMQ ports do."""

from __future__ import annotations

import pytest

from zdf.errors import ConfigError
from zdf.observe import executor_view
from zdf.observe.attach import _observer
from zdf.wire import security
from zdf.wire.reactor import Reactor


def test_http_off_loopback_is_refused_without_a_security_dir() -> None:
    outer, insecure = security.current(), security.is_insecure()
    security.install(None, insecure=False)
    reactor = Reactor()
    try:
        with pytest.raises(ConfigError, match="without a security dir"):
            _observer("0.0.0.0:0", reactor, "executor", "e", executor_view, None)
        observer = _observer("127.0.0.1:0", reactor, "executor", "e", executor_view, None)
        observer.close()
    finally:
        security.install(outer, insecure=insecure)
        reactor.close()
