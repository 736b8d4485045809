"""MMA, repeatability, registration RMSE and success rates on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarreg.evaluation.bench import GroundTruth
from sarreg.evaluation.metrics import (
    THRESHOLDS,
    grid_points,
    match_errors,
    mma_curve,
    registration_rmse,
    repeatability,
    success_rates,
)
from sarreg.geometry import apply_matrix, similarity_about_centre

M = similarity_about_centre((200, 300), 7.0, 1.1, (5.0, -3.0))  # moving px -> reference px
GT = GroundTruth(matrix=M)


def _matches(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy_mov = rng.uniform([20, 20], [280, 180], size=(n, 2))
    return apply_matrix(M, xy_mov), xy_mov


def test_perfect_matches_give_mma_one_and_zero_rmse():
    xy_ref, xy_mov = _matches()
    err = match_errors(xy_ref, xy_mov, GT.map)
    assert np.allclose(err, 0.0, atol=1e-9)
    assert np.allclose(mma_curve(err), 1.0)
    pts = grid_points(np.ones((200, 300), bool), 10)
    assert registration_rmse(M, GT.map, pts) == pytest.approx(0.0, abs=1e-9)


def test_shifted_matches_give_expected_fractions():
    xy_ref, xy_mov = _matches(100)
    # 50 exact, 30 shifted by 2 px, 20 shifted by 7 px (along x in the reference)
    xy_ref = xy_ref.copy()
    xy_ref[50:80, 0] += 2.0
    xy_ref[80:, 1] -= 7.0
    curve = mma_curve(match_errors(xy_ref, xy_mov, GT.map), THRESHOLDS)
    expected = [0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert np.allclose(curve, expected)


def test_no_matches_and_undefined_truth_count_as_wrong():
    assert np.allclose(mma_curve(np.zeros(0)), 0.0)
    field = np.full((10, 10, 2), np.nan)
    gt = GroundTruth(field=field)
    err = match_errors(np.zeros((3, 2)), np.ones((3, 2)), gt.map)
    assert np.all(np.isinf(err))
    assert np.allclose(mma_curve(err), 0.0)


def test_rmse_of_a_translated_estimate_is_the_translation():
    pts = grid_points(np.ones((200, 300), bool), 8)
    shift = np.eye(3)
    shift[:2, 2] = (3.0, 4.0)
    assert registration_rmse(shift @ M, GT.map, pts) == pytest.approx(5.0)
    assert math.isinf(registration_rmse(None, GT.map, pts))
    assert math.isinf(registration_rmse(np.full((3, 3), np.nan), GT.map, pts))


def test_success_rates_count_failures():
    rates = success_rates([0.5, 2.0, 4.0, float("inf")])
    assert rates == {1.0: 0.25, 3.0: 0.5, 5.0: 0.75}


def test_repeatability_perfect_and_partial():
    shape = (200, 300)
    ref_ov, mov_ov = GT.overlap_masks(shape, shape)
    rng = np.random.default_rng(1)
    kp_mov = rng.uniform([40, 40], [260, 160], size=(200, 2))
    kp_ref = apply_matrix(M, kp_mov)
    inside = mov_ov[np.rint(kp_mov[:, 1]).astype(int), np.rint(kp_mov[:, 0]).astype(int)]
    assert inside.all()
    assert repeatability(kp_ref, kp_mov, GT.map, ref_ov, mov_ov, 3.0) == pytest.approx(1.0)
    moved = kp_ref.copy()
    moved[:50] += 10.0  # a quarter no longer repeated
    rep = repeatability(moved, kp_mov, GT.map, ref_ov, mov_ov, 3.0)
    assert rep == pytest.approx(0.75, abs=0.02)


def test_dense_field_agrees_with_matrix():
    h, w = 60, 80
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    field = apply_matrix(M, np.stack([xs.ravel(), ys.ravel()], 1)).reshape(h, w, 2)
    dense = GroundTruth(field=field)
    pts = np.array([[10.25, 20.5], [33.0, 40.75], [78.9, 58.1]])
    assert np.allclose(dense.map(pts), GT.map(pts), atol=1e-9)
    assert np.all(np.isnan(dense.map(np.array([[-1.0, 5.0], [5.0, 60.0]]))))
