"""The package used outside the repository: presets found by name, runs under the cwd.

The package folder is copied alone (as an install puts it into site-packages, without the
repository's configs/ and data/) and run from another folder. The wheel itself is built,
installed into a fresh venv and exercised by ``.ci/check_install.sh`` (``make test``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(
        REPO / "sarreg", root / "site" / "sarreg", ignore=shutil.ignore_patterns("__pycache__")
    )
    user = root / "user"
    user.mkdir()
    env = {**os.environ, "PYTHONPATH": str(root / "site")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "sarreg", *args], capture_output=True, text=True, cwd=user,
            env=env,
        )  # fmt: skip

    return run, user, root / "site"


def test_presets_are_found_by_name_outside_the_repository(installed):
    run, user, site = installed
    out = run("train", "--list-configs")
    assert out.returncode == 0, out.stderr
    assert "smoke" in out.stdout and "fast_r2d2_sar" in out.stdout
    missing = run("train", "--config", "smoke", "--steps", "1", "--no-progress")
    assert missing.returncode == 12
    assert "training data of config 'smoke' not found" in missing.stderr
    assert "--data" in missing.stderr and "Traceback" not in missing.stderr
    assert not (user / "runs").exists()


def test_preset_with_data_trains_into_runs_under_the_working_folder(installed):
    run, user, site = installed
    sample = REPO / "data" / "umbra_mount_yasur.tif"
    out = run("train", "--config", "smoke", "--data", str(sample), "--steps", "2", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (user / "runs" / "smoke" / "last.pt").is_file()
    saved = (user / "runs" / "smoke" / "config.yaml").read_text()
    assert str(sample) in saved and "not found" in out.stderr  # validation skipped, logged
    imported = subprocess.run(
        [sys.executable, "-c", "import sarreg; print(sarreg.__file__)"],
        capture_output=True, text=True, cwd=user, env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert imported.stdout.strip().startswith(str(site))
