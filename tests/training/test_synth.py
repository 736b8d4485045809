"""Pair synthesis: ground-truth geometry, speckle statistics, radiometric conversions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sarreg.errors import ConfigError
from sarreg.io import read_raster
from sarreg.training.synth import (
    SynthConfig,
    apply_homography,
    ground_truth_field,
    make_pair,
    random_homography,
    smooth_intensity,
    speckle,
    to_linear_intensity,
)

CLEAN = SynthConfig(
    speckle=False,
    noise_prob=0.0,
    ramp_db=0.0,
    gain_db=(0.0, 0.0),
    gamma=(1.0, 1.0),
    display_prob=0.0,
)


@pytest.fixture(scope="module")
def umbra_scene(data_dir):
    """A 400x400 window of the real Umbra image as smoothed linear intensity."""
    r = read_raster(data_dir / "umbra_mount_yasur.tif", window=(800, 800, 400, 400))
    intensity = to_linear_intensity(r.data, r.kind, "amplitude")
    return smooth_intensity(intensity, r.mask, "box", 3), r.mask


def test_field_maps_points_like_the_transform():
    rng = np.random.default_rng(3)
    m = random_homography(rng, (64, 80), (70, 90), SynthConfig(perspective=0.1))
    field, inside = ground_truth_field(m, (64, 80), (70, 90))
    ys, xs = rng.integers(0, 64, 50), rng.integers(0, 80, 50)
    expected = apply_homography(m, np.stack([xs, ys], 1).astype(float))
    ok = inside[ys, xs]
    assert ok.sum() > 10
    np.testing.assert_allclose(field[ys, xs][ok], expected[ok], atol=1e-3)
    assert np.all((expected[ok] >= 0) & (expected[ok] <= [89, 69]))


def test_random_homography_respects_ranges():
    cfg = SynthConfig(
        rotation_deg=10, scale=(0.9, 1.1), aspect=1.0, shear=0.0, perspective=0.0, translation=0.0
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = random_homography(rng, (101, 101), config=cfg)
        a = m[:2, :2]
        angle = math.degrees(math.atan2(a[1, 0], a[0, 0]))
        scale = math.sqrt(abs(np.linalg.det(a)))
        assert abs(angle) <= 10 + 1e-6
        assert 0.9 - 1e-6 <= scale <= 1.1 + 1e-6
        np.testing.assert_allclose(apply_homography(m, [[50, 50]]), [[50, 50]], atol=1e-6)


def test_warping_image2_back_reproduces_image1(umbra_scene):
    scene, mask = umbra_scene
    rng = np.random.default_rng(5)
    pair = make_pair(scene, mask, (100, 120), 160, rng, CLEAN)
    assert pair.valid.mean() > 0.5
    f = pair.field
    back = cv2.remap(pair.image2, f[..., 0], f[..., 1], cv2.INTER_LINEAR)
    v = pair.valid
    r_true = np.corrcoef(back[v], pair.image1[v])[0, 1]
    # a ground truth off by 3 pixels must be clearly worse: the check can fail
    back_off = cv2.remap(pair.image2, f[..., 0] + 3, f[..., 1], cv2.INTER_LINEAR)
    r_off = np.corrcoef(back_off[v], pair.image1[v])[0, 1]
    assert r_true > 0.97
    assert r_off < r_true - 0.1


def test_independent_speckle_decorrelates_the_sides(umbra_scene):
    scene, mask = umbra_scene
    rng = np.random.default_rng(1)
    cfg = SynthConfig(looks=(1.0, 1.0), display_prob=0.0, noise_prob=0.0)
    pair = make_pair(scene, mask, (100, 120), 160, rng, cfg, homography=np.eye(3))
    r = np.corrcoef(pair.image1.ravel(), pair.image2.ravel())[0, 1]
    assert 0.2 < r < 0.9  # same scene, different speckle
    assert pair.image1.dtype == np.float32 and pair.image1.min() >= 0 and pair.image1.max() <= 1


@pytest.mark.parametrize("looks", [1.0, 2.5, 4.0, 8.0])
def test_speckle_has_mean_one_and_variance_one_over_looks(looks):
    s = speckle((1000, 1000), looks, np.random.default_rng(0))
    assert abs(s.mean() - 1.0) < 0.005
    assert abs(s.var() - 1.0 / looks) / (1.0 / looks) < 0.02


def test_linear_intensity_conversions():
    x = np.array([[1.0, 4.0]], np.float32)
    np.testing.assert_allclose(to_linear_intensity(x, "power"), x)
    np.testing.assert_allclose(to_linear_intensity(x, "amplitude"), x**2)
    np.testing.assert_allclose(
        to_linear_intensity(np.array([[10.0, -10.0]]), "db"), [[10, 0.1]], rtol=1e-5
    )
    d = to_linear_intensity(np.array([[0.0, 255.0]]), "display", "intensity")
    assert d[0, 0] > 0 and d[0, 1] == pytest.approx(1.0)
    a = to_linear_intensity(np.array([[127.5]]), "display", "amplitude")
    assert a[0, 0] == pytest.approx(0.25, rel=1e-3)


def test_smoothing_reduces_speckle_variance():
    rng = np.random.default_rng(0)
    img = speckle((200, 200), 1.0, rng)
    mask = np.ones_like(img, bool)
    for method in ("box", "lee", "median"):
        out = smooth_intensity(img, mask, method, 5 if method != "median" else 3)
        assert out.var() < 0.5 * img.var(), method


def test_bad_ranges_are_config_errors():
    with pytest.raises(ConfigError, match="scale"):
        SynthConfig(scale=(1.2, 0.8))
    with pytest.raises(ConfigError, match="smoothing"):
        SynthConfig(smoothing="gauss")
