"""Times and durations as a person reads them in a table."""

from __future__ import annotations

import time


def clock(stamp: float | None, now: float | None = None) -> str:
    """``HH:MM:SS`` today, ``MM-DD HH:MM`` on another day, empty for none."""
    if not stamp:
        return ""
    now = time.time() if now is None else now
    local = time.localtime(stamp)
    if time.localtime(now)[:3] == local[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%m-%d %H:%M", local)


def duration(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h07m``; empty for none."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def job_duration(job: dict[str, object], now: float | None = None) -> float | None:
    """From its start (or submission) to its end, or to now while it runs."""
    start = job.get("started_at") or job.get("submitted_at")
    if not isinstance(start, int | float):
        return None
    end = job.get("finished_at")
    end = end if isinstance(end, int | float) else (time.time() if now is None else now)
    return float(end) - float(start)
