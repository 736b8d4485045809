"""Atomic output: early path checks, rename-on-success, nothing left behind on failure."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarreg.atomic import atomic_write, check_output_path, write_json_atomic, write_text_atomic
from sarreg.errors import OutputError, OutputExistsError


def _unwritable_folder(tmp_path):
    """A folder this process cannot create files in (chmod; /sys when running as root)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    probe = d / ".probe"
    try:
        probe.touch()
    except OSError:
        return d
    probe.unlink()  # root ignores permissions: use a filesystem that refuses file creation
    d.chmod(stat.S_IRWXU)
    sysfs = Path("/sys")
    try:
        (sysfs / ".sarreg_probe").touch()
    except OSError:
        return sysfs
    (sysfs / ".sarreg_probe").unlink()
    pytest.skip("no unwritable folder available on this machine")


def test_check_output_path_ok_and_existing(tmp_path):
    out = tmp_path / "out.tif"
    assert check_output_path(out) == out
    assert list(tmp_path.iterdir()) == []  # the writability probe is cleaned up
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError) as exc:
        check_output_path(out)
    msg = str(exc.value)
    assert "exists" in msg and "--overwrite" in msg and "\n" not in msg
    assert check_output_path(out, overwrite=True) == out
    assert out.read_bytes() == b"old"


def test_check_output_path_bad_folders(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.tif")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path)
    ro = _unwritable_folder(tmp_path)
    with pytest.raises(OutputError, match="not writable") as exc:
        check_output_path(ro / "out.tif")
    assert "\n" not in str(exc.value)


def test_atomic_write_success_geotiff(tmp_path, data_dir):
    out = tmp_path / "copy.tif"
    with rasterio.open(data_dir / "s1_vv_grd_db.tif") as src:
        arr, profile = src.read(1), src.profile
    with atomic_write(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tif"
        assert not out.exists()
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.tif"]
    with rasterio.open(out) as chk:
        assert chk.crs == profile["crs"] and chk.nodata == -99
        np.testing.assert_array_equal(chk.read(1), arr)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_exception_leaves_nothing(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    out.write_text("old")  # with overwrite, a failure keeps the old file intact
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(out, overwrite=True) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_no_clobber_race(tmp_path):
    out = tmp_path / "out.txt"
    with pytest.raises(OutputExistsError, match="appeared"):
        with atomic_write(out) as tmp:
            tmp.write_text("mine")
            out.write_text("someone else's")
    assert out.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_refuses_existing_before_yield(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    entered = False
    with pytest.raises(OutputExistsError):
        with atomic_write(out):
            entered = True
    assert not entered and out.read_text() == "old"


def test_write_json_atomic_writes_long_record_lists_one_per_line(tmp_path):
    """A top-level list of many records (a report's tie points) is one compact record per line;
    the rest is indented as json.dumps(indent=2) writes it; the JSON is the same."""
    from sarreg.atomic import RECORD_LINES_MIN, json_text

    records = [{"ref_px": [i, 0.5], "inlier": i % 2 == 0} for i in range(RECORD_LINES_MIN + 1)]
    obj = {"n": 1, "nested": {"a": [1, 2]}, "tie_points": records, "few": records[:3]}
    text = write_json_atomic(obj, tmp_path / "r.json").read_text()
    assert json.loads(text) == obj
    lines = text.splitlines()
    assert '    {"ref_px": [0, 0.5], "inlier": true},' in lines
    assert sum(ln.lstrip().startswith('{"ref_px"') for ln in lines) == len(records)
    few = {"n": 1, "nested": {"a": [1, 2]}, "few": records[:3]}
    assert json_text(few) == json.dumps(few, indent=2) + "\n"


def test_write_json_atomic_numpy_round_trip(tmp_path):
    obj = {
        "n": np.int64(7),
        "f": np.float32(0.5),
        "flag": np.bool_(True),
        "m": np.eye(3),
        "path": tmp_path,
    }
    out = write_json_atomic(obj, tmp_path / "r.json")
    text = out.read_text()
    assert text.endswith("\n") and '\n  "n": 7' in text  # indent 2
    back = json.loads(text)
    assert back == {
        "n": 7,
        "f": 0.5,
        "flag": True,
        "m": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "path": str(tmp_path),
    }
    write_json_atomic({"a": 1}, out)  # overwrite defaults to True
    assert json.loads(out.read_text()) == {"a": 1}
    with pytest.raises(OutputExistsError):
        write_json_atomic({"a": 2}, out, overwrite=False)


def test_write_json_unserializable_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic({"x": object()}, tmp_path / "bad.json")
    assert list(tmp_path.iterdir()) == []


def test_write_text_atomic(tmp_path):
    out = write_text_atomic("héllo\n", tmp_path / "t.txt")
    assert out.read_text(encoding="utf-8") == "héllo\n"
