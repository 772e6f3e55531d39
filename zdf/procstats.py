"""Process statistics for reports and benchmarks: peak RSS sampled with psutil."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import psutil


class PeakRss:
    """Samples the RSS of processes (psutil) in a thread; ``peaks`` maps name -> peak MiB.

    ``pids()`` is asked on every sample, so processes started after the sampler
    (a runner's children) are picked up as they appear."""

    def __init__(self, pids: Callable[[], Iterable[tuple[str, int]]], interval: float = 0.01):
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self.peaks: dict[str, float] = {}

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        procs: dict[int, tuple[str, psutil.Process]] = {}
        while not self._stop.wait(self._interval):
            for name, pid in list(self._pids()):
                if pid not in procs:
                    try:
                        procs[pid] = (name, psutil.Process(pid))
                    except psutil.Error:
                        continue
            for name, proc in procs.values():
                try:
                    rss = proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peaks[name] = max(self.peaks.get(name, 0.0), round(rss, 1))
