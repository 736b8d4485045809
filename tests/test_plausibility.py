"""The plausibility and overlap checks of sarreg.geometry at their documented boundaries.

A transform at the edge of ``scale_range`` / ``max_perspective`` is accepted, one just past it
is refused with the message naming what is wrong; each refusal is a DegenerateTransformError
(the registration exits with its code, never writes a wrong result).
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from sarreg import geometry as g
from sarreg.errors import DegenerateTransformError, NoOverlapError

SHAPE = (1025, 1025)  # w - 1 = 1024: the projective terms below are exact in binary


@pytest.mark.parametrize("s", [0.1, 10.0])
def test_scale_at_the_range_limits_is_accepted(s):
    g.check_plausible(np.diag([s, s, 1.0]), "affine", scale_range=(0.1, 10.0))


@pytest.mark.parametrize("s", [0.0999, 10.01])
def test_scale_just_outside_the_range_is_refused_with_both_values(s):
    with pytest.raises(DegenerateTransformError, match=r"scales by .* outside 0.1\.\.10") as e:
        g.check_plausible(np.diag([s, 1.0, 1.0]), "affine", scale_range=(0.1, 10.0))
    assert "simpler --transform" in e.value.hint


def test_perspective_at_the_limit_is_accepted_and_beyond_is_refused():
    at_limit = np.array([[1.0, 0, 0], [0, 1, 0], [0.5 / 1024, 0, 1]])  # denominator 1 .. 1.5
    g.check_plausible(at_limit, "homography", shape=SHAPE, max_perspective=0.5)
    with pytest.raises(DegenerateTransformError, match=r"strong perspective .*1\.50x"):
        g.check_plausible(at_limit, "homography", shape=SHAPE, max_perspective=0.49)
    # the perspective limit is a homography check: an affine model never has one
    g.check_plausible(np.eye(3), "affine", shape=SHAPE, max_perspective=0.0)


def test_a_denominator_reaching_zero_at_a_corner_is_refused():
    to_infinity = np.array([[1.0, 0, 0], [0, 1, 0], [-1.0 / 1024, 0, 1]])  # 0 at x = 1024
    with pytest.raises(DegenerateTransformError, match="to infinity"):
        g.check_plausible(to_infinity, "homography", shape=SHAPE)
    with pytest.raises(DegenerateTransformError, match="to infinity"):
        g.check_plausible(np.diag([1.0, 1.0, 0.0]), "affine", shape=SHAPE)


def test_a_negative_overall_sign_is_the_same_transform():
    """``M`` and ``-M`` are one projective mapping: both accepted."""
    m = np.array([[1.0, 0.01, 3], [-0.01, 1, -2], [1e-5, 0, 1]])
    g.check_plausible(m, "homography", shape=SHAPE)
    g.check_plausible(-m, "homography", shape=SHAPE)


def test_default_shape_is_a_4096_pixel_image():
    """Without ``shape`` the checks cover a 4096 x 4096 moving image: a homography that reaches
    infinity at x = 4095 is refused, one that reaches it at twice that is accepted."""
    g.check_plausible(np.array([[1.0, 0, 0], [0, 1, 0], [-1.0 / 8000, 0, 1]]), "homography",
                      max_perspective=100.0)  # fmt: skip
    with pytest.raises(DegenerateTransformError, match="to infinity"):
        g.check_plausible(
            np.array([[1.0, 0, 0], [0, 1, 0], [-1.0 / 4095, 0, 1]]), "homography",
            max_perspective=100.0,
        )  # fmt: skip


def test_reflection_refused_unless_allowed_and_then_still_scale_checked():
    mirror = np.diag([-1.0, 1.0, 1.0])
    with pytest.raises(DegenerateTransformError, match="mirrored") as e:
        g.check_plausible(mirror, "affine")
    assert "--allow-reflection" in e.value.hint
    g.check_plausible(mirror, "affine", allow_reflection=True)
    g.check_plausible(np.eye(3), "affine", allow_reflection=True)  # a non-mirrored one too
    with pytest.raises(DegenerateTransformError, match="scales by"):
        g.check_plausible(np.diag([-20.0, 20.0, 1.0]), "affine", allow_reflection=True)


def test_nearly_singular_transform_is_singular_not_a_scale_problem():
    with pytest.raises(DegenerateTransformError, match="singular"):
        g.check_plausible(np.diag([1.0, 1e-13, 1.0]), "affine", scale_range=(0.0, 10.0))
    g.check_plausible(np.diag([1.0, 1e-6, 1.0]), "affine", scale_range=(0.0, 10.0))


def test_unknown_model_is_refused():
    with pytest.raises(Exception, match="homography"):
        g.check_plausible(np.eye(3), "perspective")


def test_a_collapsed_moving_footprint_does_not_overlap():
    """A moving geotransform whose rows collapse onto one line covers no area: no overlap,
    refused, whatever the line crosses."""
    t_ref = Affine(10.0, 0, 500_000, 0, -10.0, 4_000_000)
    collapsed = Affine(10.0, 0, 500_000, 0, 0.0, 3_999_000)
    shape = (200, 200)
    assert g.overlap_fraction(t_ref, "EPSG:32631", shape, collapsed, "EPSG:32631", shape) == 0
    with pytest.raises(NoOverlapError, match="do not overlap"):
        g.check_overlap(t_ref, "EPSG:32631", shape, collapsed, "EPSG:32631", shape)


def test_overlap_is_the_fraction_of_the_smaller_footprint():
    t_ref = Affine(10.0, 0, 500_000, 0, -10.0, 4_000_000)
    small = Affine(10.0, 0, 500_000 + 1500, 0, -10.0, 4_000_000)  # 100 x 100 px, half inside
    frac = g.overlap_fraction(t_ref, "EPSG:32631", (200, 200), small, "EPSG:32631", (100, 100))
    assert frac == pytest.approx(0.5)
    assert g.check_overlap(t_ref, "EPSG:32631", (200, 200), small, "EPSG:32631", (100, 100)) == (
        pytest.approx(0.5)
    )


def test_georeferencing_guess_fits_the_whole_moving_image_between_crss():
    """Between a UTM reference and a lon/lat moving image of 1500 x 1000 px (3 x 2 degrees),
    the affine guess from georeferencing is as close to the exact mapping over the whole image
    as an independent least-squares fit on a dense lattice (the mapping is curved, so a fit to
    part of the image would be far off at the other end)."""
    ref_t, ref_crs = Affine(100.0, 0, 300_000, 0, -100.0, 5_200_000), "EPSG:32631"
    mov_t, mov_crs = Affine(0.002, 0, 1.0, 0, -0.002, 46.9), "EPSG:4326"
    h, w = 1000, 1500
    m = g.matrix_from_georef(ref_t, ref_crs, mov_t, mov_crs, (h, w))
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 41), np.linspace(0, h - 1, 41))
    src = np.stack([gx.ravel(), gy.ravel()], 1)
    exact = g.prior_from_georef(ref_t, ref_crs, mov_t, mov_crs)(src)
    design = np.c_[src, np.ones(len(src))]
    best = design @ np.linalg.lstsq(design, exact, rcond=None)[0]
    best_err = np.linalg.norm(best - exact, axis=1).max()
    err = np.linalg.norm(g.apply_matrix(m, src) - exact, axis=1)
    assert 5.0 < best_err < 50.0  # curved enough to tell a partial fit from a full one
    assert err.max() <= 1.1 * best_err
    # on one CRS the guess is exact
    same = g.matrix_from_georef(ref_t, ref_crs, ref_t * Affine.translation(7, -3), ref_crs, (h, w))
    np.testing.assert_allclose(same, [[1, 0, 7], [0, 1, -3], [0, 0, 1]], atol=1e-9)


@pytest.mark.parametrize("model", ["translation", "similarity", "affine"])
def test_leave_one_out_error_exists_at_the_fewest_accepted_matches(model):
    """A fit on exactly ``min_inliers`` matches still reports its leave-one-out RMSE (a
    number, equal to explicit refits without each match), not NaN."""
    n = g.min_inliers(model)
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 1000, (n, 2))
    dst = src @ np.array([[0.99, 0.02], [-0.02, 0.99]]).T + [5, -3] + rng.normal(0, 0.5, (n, 2))
    fit = g.fit_transform(src, dst, model, threshold=50.0)
    assert fit.inliers.sum() == n
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        m = g._lstsq_linear(model, src[keep], dst[keep])[0]  # fewer than fit_transform takes
        errs.append(((g.apply_matrix(m, src[i]) - dst[i]) ** 2).sum())
    assert np.isfinite(fit.loo_rmse)
    assert fit.loo_rmse == pytest.approx(np.sqrt(np.mean(errs)), rel=1e-6)
    assert fit.loo_rmse > fit.rmse
