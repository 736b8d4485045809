"""SAR-SIFT: the ROEWA gradient ratio is invariant to a multiplicative constant."""

from __future__ import annotations

import numpy as np

from sarreg.evaluation.sarsift import (
    SarSiftConfig,
    detect_and_describe,
    roewa_gradient,
    sar_harris,
)
from sarreg.io import read_raster
from sarreg.training.synth import to_linear_intensity


def _intensity(data_dir) -> np.ndarray:
    r = read_raster(data_dir / "s1_vv_grd_db.tif")
    return to_linear_intensity(r.data, r.kind)


def test_roewa_gradient_invariant_to_multiplicative_constant(data_dir):
    x = _intensity(data_dir)
    for alpha in (2.0, 5.0):
        gx, gy = roewa_gradient(x, alpha)
        gx2, gy2 = roewa_gradient(x * 37.5, alpha)
        assert np.allclose(gx, gx2, atol=1e-4) and np.allclose(gy, gy2, atol=1e-4)
        r1, r2 = sar_harris(gx, gy, alpha), sar_harris(gx2, gy2, alpha)
        assert np.allclose(r1, r2, atol=1e-5)
    assert np.abs(gx).max() > 0.1  # not trivially zero


def test_roewa_sign_and_step_edge():
    x = np.ones((40, 40), np.float32)
    x[:, 20:] = 4.0  # brighter on the right
    gx, gy = roewa_gradient(x, 2.0)
    assert gx[20, 19] > 1.0 and abs(gy[20, 19]) < 1e-5
    assert np.isclose(gx[20, 5], 0.0, atol=1e-4)


def test_descriptors_are_unit_136_and_scale_invariant(data_dir):
    x = _intensity(data_dir)
    cfg = SarSiftConfig(max_keypoints=300)
    f1 = detect_and_describe(x, None, cfg)
    f2 = detect_and_describe(x * 1000.0, None, cfg)
    assert f1.descriptors.shape[1] == 136 and len(f1.keypoints) > 50
    assert np.allclose(np.linalg.norm(f1.descriptors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(f1.keypoints, f2.keypoints)
    assert np.allclose(f1.descriptors, f2.descriptors, atol=1e-4)
