"""The synthetic benchmark builder: reproducible from its seed, exact ground truth."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import rasterio

from sarreg.errors import ConfigError, OutputExistsError
from sarreg.evaluation.bench import read_benchmark
from sarreg.evaluation.synth import build_benchmark


def _read(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1)


def test_same_seed_same_benchmark_other_seed_differs(data_dir, tmp_path):
    images = [data_dir / "s1_vv_grd_db.tif", data_dir / "opera_rtc_s1"]
    kw = dict(n=3, crop=200, difficulty="medium")
    a = build_benchmark(images, tmp_path / "a", seed=5, **kw)
    b = build_benchmark(images, tmp_path / "b", seed=5, **kw)
    c = build_benchmark(images, tmp_path / "c", seed=6, **kw)
    assert [p.tags["multidate"] for p in a] == [True, False, True]  # groups in turn
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert np.array_equal(pa.matrix, pb.matrix)
        assert np.array_equal(_read(pa.moving), _read(pb.moving), equal_nan=True)
        assert np.array_equal(_read(pa.reference), _read(pb.reference), equal_nan=True)
        assert not np.allclose(pa.matrix, pc.matrix)
    ja = json.loads((tmp_path / "a" / "pair_0001.json").read_text())
    jb = json.loads((tmp_path / "b" / "pair_0001.json").read_text())
    assert ja == jb
    assert (tmp_path / "a" / "benchmark.yaml").exists()
    assert [p.name for p in read_benchmark(tmp_path / "a")] == [
        "pair_0000",
        "pair_0001",
        "pair_0002",
    ]


def _log_diff(ref: np.ndarray, mov: np.ndarray, m: np.ndarray) -> float:
    """Median |log| ratio of the reference and the moving image warped back by ``m`` (both
    blurred, sigma 2 px), over the valid overlap."""
    back = cv2.warpPerspective(np.nan_to_num(mov), m, (256, 256), flags=cv2.INTER_LINEAR)
    back = cv2.GaussianBlur(back, (0, 0), 2.0)
    r = cv2.GaussianBlur(np.nan_to_num(ref), (0, 0), 2.0)
    ok = cv2.warpPerspective(np.isfinite(mov).astype(np.uint8), m, (256, 256)) > 0
    ok = cv2.erode(ok.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ok &= np.isfinite(ref)
    return float(np.median(np.abs(np.log(back[ok] + 1e-6) - np.log(r[ok] + 1e-6))))


def test_ground_truth_is_exact(data_dir, tmp_path):
    """Without added speckle or radiometric changes, warping the moving image back by the
    ground truth gives the reference (up to resampling: compared after a light blur); one pixel
    off is clearly worse."""
    flat = dict(
        speckle=False, noise_prob=0.0, ramp_db=0.0, gain_db=(0.0, 0.0), gamma=(1.0, 1.0),
    )  # fmt: skip
    pairs = build_benchmark(
        [data_dir / "umbra_mount_yasur.tif"], tmp_path / "g", n=2, seed=1, crop=256,
        difficulty="hard", synth_overrides=flat, display_as="amplitude",
    )  # fmt: skip
    for p in pairs:
        ref, mov = _read(p.reference), _read(p.moving)
        off = np.eye(3)
        off[0, 2] = 1.0
        exact, shifted = _log_diff(ref, mov, p.matrix), _log_diff(ref, mov, off @ p.matrix)
        assert exact < 0.4 * shifted
        assert exact < 0.03
        assert p.model == "homography" and abs(p.matrix[2, :2]).max() > 0


def test_bad_arguments(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="difficulty"):
        build_benchmark([data_dir / "s1_vv_grd_db.tif"], tmp_path / "x", n=1, difficulty="nope")
    build_benchmark([data_dir / "s1_vv_grd_db.tif"], tmp_path / "y", n=1, crop=128)
    with pytest.raises(OutputExistsError):
        build_benchmark([data_dir / "s1_vv_grd_db.tif"], tmp_path / "y", n=1, crop=128)
