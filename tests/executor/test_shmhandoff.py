"""Same-host transfer through shared memory: a store port and a fetcher in this process
(the same host by construction), the fallbacks, the bounds and the sweep of stale files."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from zdf.executor import shmhandoff
from zdf.executor.objstore import make_store
from zdf.executor.objtransfer import Fetcher, StoreServer
from zdf.executor.shmhandoff import Handoff
from zdf.wire.reactor import Reactor

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not shmhandoff.host_identity(), reason="no usable /dev/shm here"),
]

BIG = np.arange(4 << 20, dtype=np.int64)  # 32 MiB: over MIN_BYTES and the chunk threshold


def fetch(reactor: Reactor, fetcher: Fetcher, key: Any, addr: str) -> Any:
    got: list[tuple[Any, Any]] = []
    fetcher.fetch(key, [addr], BIG.nbytes, lambda value, error: got.append((value, error)))
    reactor.run(until=lambda: bool(got), deadline=time.monotonic() + 30)
    assert got, "the fetch never finished"
    value, error = got[0]
    assert error is None
    return value


def mapped(array: Any) -> bool:
    """Whether ``array`` is a view on a memory map (not the heap)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def files_in(handoff: Handoff) -> list[str]:
    return os.listdir(handoff.dir)


def test_a_big_value_on_the_same_host_is_mapped_not_sent(reactor: Reactor) -> None:
    store = make_store()
    store[1] = BIG
    store[2] = {"small": b"x" * 100}
    server = StoreServer(store, "127.0.0.1")
    fetcher = Fetcher(reactor)
    try:
        value = fetch(reactor, fetcher, 1, server.addr)
        np.testing.assert_array_equal(value, BIG)
        assert not value.flags.writeable  # a view on the read-only map, not a copy
        assert server.shm_served == 1 and fetcher.shm_fetched == 1 and fetcher.fallbacks == 0
        (name,) = files_in(server.handoff)
        path = os.path.join(server.handoff.dir, name)
        assert os.stat(server.handoff.dir).st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        # The holder keeps the value as a map of that file now: in memory once.
        held = store[1]
        assert not held.flags.writeable and mapped(held)
        np.testing.assert_array_equal(held, BIG)
        # A second reader gets the same file: nothing written again.
        np.testing.assert_array_equal(fetch(reactor, fetcher, 1, server.addr), BIG)
        assert server.shm_served == 2 and server.handoff.written == 1
        # A small value is not worth a file: it comes over the socket.
        assert fetch(reactor, fetcher, 2, server.addr) == {"small": b"x" * 100}
        assert server.shm_served == 2 and fetcher.fetched == 3
        # Released from the store: its file goes; the reader's map still reads.
        del store[1]
        assert not os.path.exists(path) and server.handoff.held_bytes == 0
        np.testing.assert_array_equal(value, BIG)
    finally:
        fetcher.close()
        handoff_dir = server.handoff.dir
        server.close()
    assert not os.path.exists(handoff_dir)  # removed with the store port


def test_a_spilling_store_holds_the_map_and_its_file_goes_with_the_value(
    reactor: Reactor, tmp_path: Any
) -> None:
    store = make_store(1 << 30, str(tmp_path / "spill"))
    store[1] = BIG.copy()
    server = StoreServer(store, "127.0.0.1")
    fetcher = Fetcher(reactor)
    try:
        np.testing.assert_array_equal(fetch(reactor, fetcher, 1, server.addr), BIG)
        assert mapped(store[1]) and store.memory_bytes == BIG.nbytes  # the same size
        assert len(files_in(server.handoff)) == 1
        store[1] = np.zeros(4)  # replaced: the old value's file goes
        assert files_in(server.handoff) == []
        store[3] = BIG
        np.testing.assert_array_equal(fetch(reactor, fetcher, 3, server.addr), BIG)
        assert len(files_in(server.handoff)) == 1
        store.pop(3)
        assert files_in(server.handoff) == []
    finally:
        fetcher.close()
        server.close()
        store.close()


def test_a_handoff_the_reader_cannot_open_falls_back_to_the_network(
    reactor: Reactor, tmp_path: Any
) -> None:
    store = make_store()
    store[1] = BIG
    server = StoreServer(store, "127.0.0.1")
    fetcher = Fetcher(reactor)
    fetcher.shm_root = str(tmp_path)  # the reader sees another /dev/shm: the open fails
    try:
        value = fetch(reactor, fetcher, 1, server.addr)
        np.testing.assert_array_equal(value, BIG)
        assert fetcher.fallbacks == 1 and fetcher.shm_fetched == 0 and fetcher.fetched == 1
        # That holder is asked over the network from then on: no second file written.
        np.testing.assert_array_equal(fetch(reactor, fetcher, 1, server.addr), BIG)
        assert server.shm_served == 1 and fetcher.fallbacks == 1
    finally:
        fetcher.close()
        server.close()


def test_another_host_identity_gets_the_network_path(reactor: Reactor) -> None:
    store = make_store()
    store[1] = BIG
    server = StoreServer(store, "127.0.0.1")
    fetcher = Fetcher(reactor)
    fetcher.identity = "another-boot:1:0"
    try:
        np.testing.assert_array_equal(fetch(reactor, fetcher, 1, server.addr), BIG)
        assert server.shm_served == 0 and server.handoff.written == 0
    finally:
        fetcher.close()
        server.close()


def test_a_full_tmpfs_or_the_bound_sends_over_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handoff = Handoff()
    try:
        frames = [b"head", memoryview(BIG).cast("B")]

        def full(*args: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(shmhandoff.os, "pwrite", full)
            assert handoff.offer(1, frames) is None
        assert files_in(handoff) == [] and handoff.declined == 1  # the partial file is gone
        first = handoff.offer(1, frames)
        assert first is not None and files_in(handoff) == [first["file"]]
        monkeypatch.setattr(shmhandoff, "MAX_SHARE", 1.5 * BIG.nbytes / _tmpfs_bytes())
        assert handoff.offer(2, frames) is None  # two files would be over the bound
        assert handoff.held_bytes >= BIG.nbytes and handoff.declined == 2
        handoff.release(1)  # its value left the store
        assert files_in(handoff) == [] and handoff.held_bytes == 0
        assert handoff.offer(2, frames) is not None  # room again
    finally:
        handoff.close()


def _tmpfs_bytes() -> int:
    fs = os.statvfs(shmhandoff.SHM_ROOT)
    return fs.f_blocks * fs.f_frsize


def test_files_of_a_killed_worker_are_swept_at_the_next_start() -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    dead_pid = int(gone.stdout)
    stale = os.path.join(shmhandoff.SHM_ROOT, f"zdf-{dead_pid}-objstale_1")
    os.makedirs(stale, mode=0o700)
    with open(os.path.join(stale, "0" * 32), "wb") as fh:
        fh.write(b"left by a killed worker")
    handoff = Handoff()
    try:
        assert not os.path.exists(stale)
        assert os.path.isdir(handoff.dir)
    finally:
        handoff.close()
