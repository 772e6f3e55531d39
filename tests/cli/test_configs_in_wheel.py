"""A pip user gets the example configs: they are in the wheel, and `zdf configs` copies them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def test_the_wheel_carries_the_configs_and_the_dashboard(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "tests", "bench", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run(
        [*pip, "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = tmp_path.glob("zdf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    configs = {Path(n).name for n in names if "/share/zdf/configs/" in n}
    assert {p.name for p in (ROOT / "configs").glob("*.toml")} <= configs
    assert "zdf/observe/static/htmx.min.js" in names
    assert "zdf/observe/templates/panel.html" in names


def test_zdf_configs_copies_the_examples(tmp_path: Path) -> None:
    target = tmp_path / "my-configs"
    out = subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", "configs", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (target / "master.toml").read_text() == (ROOT / "configs" / "master.toml").read_text()
    again = subprocess.run(
        [sys.executable, "-m", "zdf.cli.main", "configs", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "kept" in again.stdout and "wrote" not in again.stdout
