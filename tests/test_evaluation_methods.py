"""Every method recovers a known small warp of a real SAR sample (Umbra, 320 x 320 crop)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sarreg.errors import ConfigError
from sarreg.evaluation.methods import (
    PreparedImage,
    akaze_available,
    default_methods,
    make_method,
    make_methods,
)
from sarreg.geometry import fit_transform, mapping_rmse, similarity_about_centre
from sarreg.io import read_raster
from sarreg.training.synth import smooth_intensity, speckle, to_linear_intensity

SIZE = 320


@pytest.fixture(scope="module")
def scene(data_dir) -> np.ndarray:
    r = read_raster(data_dir / "umbra_mount_yasur.tif", window=(700, 700, SIZE, SIZE))
    x = to_linear_intensity(r.data, r.kind, "amplitude")
    return smooth_intensity(x, np.ones(x.shape, bool), "box", 3)


def _pair(scene: np.ndarray, m: np.ndarray, seed: int = 0):
    """Reference = scene, moving = scene warped by m^-1 (so m maps moving -> reference),
    independent 8-look speckle on both."""
    rng = np.random.default_rng(seed)
    mov = cv2.warpPerspective(scene, np.linalg.inv(m), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(
        np.ones(scene.shape, np.uint8), np.linalg.inv(m), (SIZE, SIZE), flags=cv2.INTER_NEAREST
    )
    valid = cv2.erode(valid, np.ones((3, 3), np.uint8)).astype(bool)
    ref = PreparedImage.from_intensity(scene * speckle(scene.shape, 8.0, rng))
    mov = PreparedImage.from_intensity(mov * speckle(scene.shape, 8.0, rng), valid)
    return ref, mov


@pytest.mark.parametrize("name", ["sarreg", "sift", "orb", "sarsift", "akaze"])
def test_keypoint_methods_recover_small_warp(scene, name):
    if name == "akaze" and not akaze_available():
        pytest.skip("this OpenCV has no AKAZE")
    m = similarity_about_centre((SIZE, SIZE), 4.0, 1.04, (3.0, -2.0))
    ref, mov = _pair(scene, m)
    method = make_method(name, max_keypoints=1000)
    kr, km = method.describe(ref), method.describe(mov)
    xy_ref, xy_mov = method.match(kr, km)
    fit = fit_transform(xy_mov, xy_ref, "affine", 3.0)
    assert mapping_rmse(fit.matrix, m, (SIZE, SIZE)) < 1.0


def test_phase_correlation_recovers_translation(scene):
    m = np.eye(3)
    m[:2, 2] = (6.3, -4.6)
    ref, mov = _pair(scene, m)
    est = make_method("phasecorr").estimate(ref, mov)
    assert np.allclose(est[:2, 2], m[:2, 2], atol=0.5)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        make_method("surf")
    text = str(info.value)
    for name in ("sarreg", "sift", "orb", "sarsift", "phasecorr"):
        assert name in text


def test_method_lists():
    assert [m.name for m in make_methods(["sift,orb", "sift"])] == ["sift", "orb"]
    assert "sarsift" in default_methods() and "phasecorr" in default_methods()
    with pytest.raises(Exception, match="not found"):
        make_method("sarreg:/nonexistent/model.pt")
