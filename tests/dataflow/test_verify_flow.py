"""``zdf verify-flow``: exit 0 on exact output, 1 on a wrong sum, a missing or unsealed
file, or a key in the wrong instance."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from zdf.cli.main import main
from zdf.jobs import build_job
from zdf.runtime.local import LocalRunner

from .jobfiles import sums_job_file


def verify(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify-flow", "--config", str(path)])
    return result.exit_code, result.output


def test_verify_flow_passes_exact_output_and_catches_wrong_output(tmp_path: Path) -> None:
    import tomllib

    path = tmp_path / "sums.toml"
    path.write_text(sums_job_file(tmp_path, 100000, 50))
    assert verify(path)[0] == 1  # nothing written yet
    with LocalRunner(build_job(tomllib.loads(path.read_text()), str(path))) as runner:
        runner.run(timeout=30)
    code, output = verify(path)
    assert code == 0 and "verify-flow OK: 50 rows" in output, output
    out = tmp_path / "sums"
    saved = tmp_path / "saved"
    shutil.copytree(out, saved)

    rows = np.load(out / "out-1.npy")
    rows["sum"][0] += 1
    np.save(out / "out-1.npy", rows)
    code, output = verify(path)
    assert code == 1 and "1 keys with a wrong sum or count" in output, output

    shutil.rmtree(out)
    shutil.copytree(saved, out)
    a, b = np.load(out / "out-0.npy"), np.load(out / "out-2.npy")
    np.save(out / "out-0.npy", np.concatenate([a, b[:1]]))
    np.save(out / "out-2.npy", b[1:])
    code, output = verify(path)
    assert code == 1 and "keys of another instance's share" in output, output

    shutil.rmtree(out)
    shutil.copytree(saved, out)
    with open(out / "out-2.npy", "ab") as fh:
        fh.write(b"\0" * 24)  # rows the header does not count: not sealed
    code, output = verify(path)
    assert code == 1 and "rows in its header" in output, output
