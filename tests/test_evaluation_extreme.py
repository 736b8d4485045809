"""The `extreme` benchmark level (any rotation, scale 0.3..3, mirrored pairs) and the runner's
whole-registration method: refused pairs are failures, predicted error next to the true one."""

from __future__ import annotations

import math
import shutil
import warnings

import cv2
import numpy as np
import pytest
import rasterio

from sarreg.evaluation.run import RunConfig, error_ratio, error_within_2x, run_benchmark
from sarreg.evaluation.synth import DIFFICULTIES, build_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

FLAT = dict(speckle=False, noise_prob=0.0, ramp_db=0.0, gain_db=(0.0, 0.0), gamma=(1.0, 1.0))


def _read(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1)


def _decompose(m: np.ndarray) -> tuple[float, float, bool]:
    """(rotation deg, isotropic scale, mirrored) of the reference -> moving linear part of
    the ground truth ``m`` (moving px -> reference px)."""
    a = np.linalg.inv(m)[:2, :2]
    det = float(np.linalg.det(a))
    mirrored = det < 0
    if mirrored:  # undo the left-right mirror in the moving image: x -> -x
        a = np.diag([-1.0, 1.0]) @ a
    return math.degrees(math.atan2(a[1, 0], a[0, 0])), math.sqrt(abs(det)), mirrored


@pytest.fixture(scope="module")
def extreme(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("extreme") / "b"
    pairs = build_benchmark(
        [data_dir / "umbra_mount_yasur.tif"], out, n=16, seed=2, crop=160,
        difficulty="extreme", synth_overrides=FLAT, display_as="amplitude",
    )  # fmt: skip
    return out, pairs


def test_extreme_pairs_span_the_documented_ranges(extreme):
    _, pairs = extreme
    level = DIFFICULTIES["extreme"]
    angles, scales, flips = [], [], []
    for p in pairs:
        angle, scale, mirrored = _decompose(p.matrix)
        angles.append(angle)
        scales.append(scale)
        flips.append(mirrored)
        assert p.tags["mirrored"] is mirrored  # the tag tells the truth
        assert p.tags["allow_reflection"] is True and p.model == "affine"
    lo, hi = level["scale"]
    slack = level["aspect"] * (1 + level["shear"])  # anisotropy and shear move sqrt|det|
    assert all(lo / slack <= s <= hi * slack for s in scales), scales
    assert max(scales) > 1.5 and min(scales) < 0.7  # both ends of 0.3..3 are drawn
    assert max(abs(a) for a in angles) > 90  # any rotation, not the +-30 deg of hard
    assert 0 < sum(flips) < len(flips)  # some mirrored, some not


def test_extreme_ground_truth_is_exact(extreme):
    """Warping the moving image back by the ground truth gives the reference (no speckle,
    flat radiometry), mirrored pairs included; the truth moved by 1 px is clearly worse."""
    _, pairs = extreme
    checked = 0
    for p in pairs:
        ref, mov = _read(p.reference), _read(p.moving)
        h, w = ref.shape
        ok = cv2.warpPerspective(np.isfinite(mov).astype(np.uint8), p.matrix, (w, h)) > 0
        ok = cv2.erode(ok.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        ok &= np.isfinite(ref)
        if ok.sum() < 2000 or _decompose(p.matrix)[1] > 1.2:  # small overlap / blurred side
            continue
        off = np.eye(3)
        off[0, 2] = 1.0
        d_exact = _log_diff(ref, mov, p.matrix, ok)
        d_off = _log_diff(ref, mov, off @ p.matrix, ok)
        assert d_exact < 0.6 * d_off, (p.name, d_exact, d_off)
        checked += 1
    assert checked >= 3


def _log_diff(ref, mov, m, ok) -> float:
    h, w = ref.shape
    back = cv2.warpPerspective(np.nan_to_num(mov), m, (w, h), flags=cv2.INTER_LINEAR)
    back = cv2.GaussianBlur(back, (0, 0), 2.0)
    r = cv2.GaussianBlur(np.nan_to_num(ref), (0, 0), 2.0)
    return float(np.median(np.abs(np.log(back[ok] + 1e-6) - np.log(r[ok] + 1e-6))))


def test_refused_pairs_count_as_failures(data_dir, tmp_path):
    """A pair sarreg register refuses (here: the moving image shows another scene) is a
    failure with rmse inf in the summary, not left out; a registered pair records the
    predicted and the true error at the same points."""
    out = tmp_path / "b"
    build_benchmark([data_dir / "opera_rtc_s1"], out, n=2, seed=3, crop=256, difficulty="medium")
    other = build_benchmark(
        [data_dir / "umbra_mount_yasur.tif"], tmp_path / "o", n=1, seed=0, crop=256,
        display_as="amplitude",
    )  # fmt: skip
    shutil.copyfile(other[0].moving, out / "pair_0001_mov.tif")  # unrelated images
    res = run_benchmark(out, RunConfig(methods=("register",)))
    recs = {r["pair"]: r for r in res.records}
    assert recs["pair_0001"]["status"].startswith("failed")
    assert math.isinf(recs["pair_0001"]["rmse"])
    good = recs["pair_0000"]
    assert good["status"] == "ok" and good["rmse"] < 3.0
    assert good["predicted_error"] > 0 and good["true_error"] > 0
    row = res.summary[0]
    assert row["pairs"] == 2 and row["failures"] == 1
    assert row["success@3"] == 0.5  # the refused pair is in the denominator
    assert row["error_within_2x"] in (0.0, 1.0)  # over the one successful pair
    from sarreg.evaluation.tables import error_table

    lines = error_table(res.records).splitlines()
    assert len(lines) == 4  # header, rule, one row per pair: the refused one too
    assert lines[3].startswith("| pair_0001 |") and "failed" in lines[3]


def test_error_within_2x_uses_successful_pairs_only():
    recs = [
        {"rmse": 0.5, "predicted_error": 0.4, "true_error": 0.5},  # ratio 0.8: within
        {"rmse": 1.0, "predicted_error": 3.0, "true_error": 1.0},  # ratio 3: outside
        {"rmse": float("inf"), "predicted_error": None, "true_error": None},  # refused
        {"rmse": 40.0, "predicted_error": 0.3, "true_error": 40.0},  # wrong: not counted
    ]
    assert error_ratio(recs[0]) == pytest.approx(0.8)
    assert error_within_2x(recs) == 0.5
    assert error_within_2x([{"rmse": 1.0}]) is None
