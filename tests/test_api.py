"""The documented Python API: lazy `from sarreg import register, RegisterConfig`, README example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_sarreg_does_no_work():
    code = (
        "import sys, sarreg; "
        "assert 'sarreg.pipeline' not in sys.modules and 'torch' not in sys.modules; "
        "from sarreg import register, RegisterConfig; "
        "assert 'sarreg.pipeline' in sys.modules; "
        "assert register.__module__ == 'sarreg.pipeline' and RegisterConfig().output.cog is False"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr


def test_register_config_alone_imports_no_torch():
    code = (
        "import sys; from sarreg import RegisterConfig; RegisterConfig(); "
        "assert 'torch' not in sys.modules and 'sarreg.pipeline' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr


def test_unknown_attribute_is_an_attribute_error():
    import sarreg

    try:
        sarreg.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    block = re.search(r"### Python API\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no Python API example"
    code = block.group(1).replace("data/demo/", f"{REPO}/data/demo/")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "inliers, RMSE" in out and "largest residual" in out
    assert (tmp_path / "aligned.tif").exists() and (tmp_path / "aligned.json").exists()
    assert (tmp_path / "tie_points.gpkg").exists()
