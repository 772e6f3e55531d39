"""Concurrent clients that record every operation for the linearizability checker.

Each client thread has its own ``MetaClient`` on all endpoints and loops:
put a value never written before, or get, on one of a few keys. Every
operation is recorded with its invocation and return time; a write that
raised ``UnknownOutcome`` (or any timeout) is kept with no return, a read that
failed is dropped. Each client also checks that the revisions it sees never
go down, and ``acked`` lists every acknowledged write for the durability check.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Sequence

from zdf.errors import Timeout, ZdfError
from zdf.metastore.client import MetaClient

from .linearizability import Op, check


class Workload:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        clients: int = 4,
        keys: int = 12,
        timeout: float = 3.0,
        read_ratio: float = 0.5,
        seed: int = 0,
        tag: str = "",
    ) -> None:
        """``tag`` names a fresh key space: histories start from missing keys."""
        self.endpoints = list(endpoints)
        self.keys = [f"lin/{tag or seed}/{i}" for i in range(keys)]
        self._tag = tag or str(seed)
        self.ops: list[Op] = []
        self.acked: dict[str, list[bytes]] = {k: [] for k in self.keys}
        self.revision_violations: list[str] = []
        self.errors: list[str] = []
        self.timeouts = 0
        self._timeout = timeout
        self._read_ratio = read_ratio
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i, seed * 1000 + i), daemon=True)
            for i in range(clients)
        ]
        self.last_ack = time.monotonic()

    def start(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self._timeout + 10)

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def acknowledged(self) -> int:
        return sum(1 for op in self.ops if op.kind == "put" and op.ret != math.inf)

    def wait_acks(self, count: int, timeout: float) -> bool:
        """Wait (with a deadline) until ``count`` more writes are acknowledged."""
        target = self.acknowledged + count
        deadline = time.monotonic() + timeout
        while self.acknowledged < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def _run(self, client_id: int, seed: int) -> None:
        rng = random.Random(seed)
        last_revision = 0
        n = 0
        with MetaClient(self.endpoints, timeout=self._timeout, attempt_timeout=0.3) as client:
            while not self._stop.is_set():
                key = rng.choice(self.keys)
                start = time.monotonic()
                try:
                    if rng.random() < self._read_ratio:
                        kv = client.get(key)
                        self._record(
                            Op(
                                client_id,
                                "get",
                                key,
                                None if kv is None else kv.value,
                                start,
                                time.monotonic(),
                            )
                        )
                    else:
                        n += 1
                        value = f"{self._tag}-c{client_id}-{n}".encode()
                        try:
                            client.put(key, value)
                        except Timeout:
                            self._record(Op(client_id, "put", key, value, start))
                            with self._lock:
                                self.timeouts += 1
                            continue
                        self._record(Op(client_id, "put", key, value, start, time.monotonic()))
                        with self._lock:
                            self.acked[key].append(value)
                            self.last_ack = time.monotonic()
                except Timeout:
                    with self._lock:
                        self.timeouts += 1
                    continue
                except ZdfError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if client.revision < last_revision:
                    self.revision_violations.append(
                        f"client {client_id}: revision {client.revision} after {last_revision}"
                    )
                last_revision = max(last_revision, client.revision)

    def final_reads(self, timeout: float = 10.0) -> None:
        """One last linearizable read of every key, recorded like the others."""
        with MetaClient(self.endpoints, timeout=timeout) as client:
            for key in self.keys:
                start = time.monotonic()
                kv = client.get(key)
                self._record(
                    Op(-1, "get", key, None if kv is None else kv.value, start, time.monotonic())
                )

    def verify(self, budget: float = 30.0) -> None:
        """Linearizable per key, revisions never went down, no unexpected errors."""
        verdicts = check(self.ops, budget)
        bad = {k: v for k, v in verdicts.items() if v == "violation"}
        assert not bad, f"not linearizable: {bad}"
        unknown = [k for k, v in verdicts.items() if v == "unknown"]
        assert not unknown, f"checker ran out of time on {unknown}"
        assert not self.revision_violations, self.revision_violations[:5]
        assert not self.errors, self.errors[:5]
