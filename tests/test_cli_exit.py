"""The process ends as soon as the command returns (``sarreg.cli.exit_process``): with its
exit code, the atexit handlers run, every stream flushed, and a running non-daemon thread
still waited for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered pipes
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def test_exit_code_atexit_handlers_and_buffered_output():
    proc = _python(
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "from sarreg.cli import exit_process\n"
        "print('buffered line')\n"  # a pipe: block-buffered, not yet written
        "sys.stderr.write('no newline on stderr')\n"
        "exit_process(4)\n"
        "print('never')\n"
    )
    assert proc.returncode == 4
    assert proc.stdout.splitlines() == ["buffered line", "atexit ran"]
    assert proc.stderr == "no newline on stderr"


def test_a_running_non_daemon_thread_is_waited_for():
    proc = _python(
        "import threading, time\n"
        "from sarreg.cli import exit_process\n"
        "def work():\n"
        "    time.sleep(0.5)\n"
        "    print('thread finished')\n"
        "threading.Thread(target=work).start()\n"
        "exit_process(5)\n"
    )
    assert proc.returncode == 5
    assert proc.stdout.strip() == "thread finished"


def test_python_m_sarreg_registers_and_exits_with_complete_outputs(tmp_path):
    out = tmp_path / "aligned.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "sarreg", "register", str(DEMO / "reference.tif"),
         str(DEMO / "moving.tif"), "-o", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("registered ") and str(out) in proc.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["verification"]["verdict"] == "pass"
    with rasterio.open(out) as ds, rasterio.open(DEMO / "reference.tif") as ref:
        assert ds.transform == ref.transform and ds.crs == ref.crs
        assert np.isfinite(ds.read(1)).mean() > 0.2
    bad = subprocess.run(
        [sys.executable, "-m", "sarreg", "register", "missing.tif", str(DEMO / "moving.tif"),
         "-o", str(tmp_path / "o2.tif")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 3
    assert bad.stderr.startswith("sarreg: error: input file not found: missing.tif")
    assert not (tmp_path / "o2.tif").exists()
