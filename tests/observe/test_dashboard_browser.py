"""The master's dashboard in a real browser: headless Chromium against a live cluster.

What a person sees: the master leading, both executors alive with their slots in
use, a running job whose record count and rate move on without a reload (htmx
swaps the panel every second), function-task counts, the metastore's leader and
term; then an executor killed shows up dead, again without a reload. A
screenshot of the page is kept in the test's tmp dir.

Chromium is Debian's package (``/usr/bin/chromium``, never a download of
Playwright's own); the test installs it with apt-get where it is missing and it
can, and skips with the reason where it cannot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import zdf
from zdf.jobs import examples
from zdf.jobs.benchrun import start_bench
from zdf.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = os.environ.get("ZDF_DASHBOARD_SCREENSHOT", "")
"""Where to copy the screenshot as well (the README's docs/dashboard.png)."""


def ensure_chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and apt-get cannot install it here (not root)")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = ensure_chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text(timeout=5000)).strip()


def records(page: Any, job_id: str) -> float:
    cell = text(page, f'#jobs tr[data-job="{job_id}"] td.records').replace(",", "")
    return float(cell or 0)


@pytest.mark.cluster(executors=2, workers=1)
def test_what_a_person_sees(cluster: LocalCluster, page: Any, tmp_path: Path) -> None:
    with zdf.connect(cluster.master_addr) as client:
        assert [f.result(10) for f in [client.submit(examples.square, i) for i in range(5)]] == [
            i * i for i in range(5)
        ]
    # Paced: 4 tables x 5,000 records at 500 records/s per producer, about 10 s.
    run = start_bench(cluster, str(tmp_path / "sink"), rate=500)
    page.goto(cluster.http_url(path="/"))
    assert text(page, "#master-name") == "master-1"
    # The page refreshes itself: on a loaded machine the first panel may predate the lead.
    wait_until(lambda: text(page, "#master-role") == "leader", 15, "the master shown leading")
    for executor in ("exec-1", "exec-2"):
        assert "alive" in text(page, f'#executors tr[data-executor="{executor}"]')
    assert text(page, "#meta-leader") == "meta-1"
    assert int(text(page, "#meta-term")) >= 1
    assert int(text(page, "#fn-completed")) >= 1

    # The job's records move on while the page stays loaded (htmx swaps the panel in).
    wait_until(lambda: records(page, run.job_id) > 0, 30, "records on the page")
    first = records(page, run.job_id)
    wait_until(lambda: records(page, run.job_id) > first, 15, "the record count to move")
    row = text(page, f'#jobs tr[data-job="{run.job_id}"]')
    assert "running" in row
    rate = text(page, f'#jobs tr[data-job="{run.job_id}"] td.rate').replace(",", "")
    assert rate and float(rate) > 0
    used = text(page, '#executors tr[data-executor="exec-1"] td.used')
    assert used.endswith(f"/ {cluster.slots}") and int(used.split("/")[0]) >= 1
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if SCREENSHOT:
        shutil.copy(shot, SCREENSHOT)

    # An executor killed: the page says so without a reload.
    victim = cluster.executors[1]
    cluster.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: "dead" in text(page, '#executors tr[data-executor="exec-2"]'),
        15,
        "exec-2 shown dead",
    )
    run.wait_end(120)
    wait_until(
        lambda: "finished" in text(page, f'#jobs tr[data-job="{run.job_id}"]'),
        15,
        "the job shown finished",
    )
