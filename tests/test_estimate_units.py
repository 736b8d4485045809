"""Small laws of the estimate stage (sarreg.estimate): pixel frames, residual figures, the
per-region split and the correlation the tie-point refinement keeps."""

from __future__ import annotations

import numpy as np
import pytest
from records import fit_of, raster_info, work_raster

from sarreg.estimate import (
    refine_by_correlation,
    region_stats,
    residual_summary,
    work_to_full,
)
from sarreg.geometry import apply_matrix


@pytest.mark.parametrize(("decimation", "offset"), [(1.0, (0, 0)), (4.0, (10, 20)), (2.5, (3, 0))])
def test_work_to_full_is_the_rasters_own_pixel_mapping(decimation, offset):
    r = work_raster(decimation, offset)
    xy = np.array([[0.0, 0.0], [1.0, 2.0], [7.0, 3.5]])
    np.testing.assert_allclose(apply_matrix(work_to_full(r), xy), r.to_full_res(xy))


def test_work_to_full_of_a_decimated_window():
    """Work pixel (0, 0) of a read decimated by 4 covers full-resolution pixels 0..3, whose
    centre is 1.5, from the window's offset on."""
    m = work_to_full(work_raster(4.0, (10, 20)))
    assert apply_matrix(m, np.array([[0.0, 0.0], [1.0, 2.0]])).tolist() == [
        [11.5, 21.5],
        [15.5, 29.5],
    ]


def test_residual_summary_is_over_the_inliers():
    out = residual_summary(np.array([3.0, 4.0, 0.0, 100.0]), np.array([True, True, True, False]))
    assert out["tie_points"] == 4 and out["inliers"] == 3
    assert out["rmse_px"] == pytest.approx(np.sqrt(25 / 3))
    assert (out["median_px"], out["max_px"]) == (3.0, 4.0)
    assert "rmse_px" not in residual_summary(np.array([1.0]), np.array([False]))


def test_region_stats_put_each_tie_point_in_its_own_region():
    """A 2 x 2 grid over 100 x 100 px: region borders at 50 (pixel edges, so pixel centre
    49 is in the first region and 50 in the second)."""
    xy = np.array([[10.0, 10.0], [49.0, 10.0], [50.0, 10.0], [90.0, 10.0], [10.0, 60.0],
                   [70.0, 70.0], [99.0, 99.0]])  # fmt: skip
    fit = fit_of(np.eye(3), 7, np.arange(7.0), rmse=1.0)
    counts = [r["residuals"]["tie_points"] for r in region_stats((100, 100), 2, xy, fit)]
    assert counts == [2, 2, 1, 2]


def test_refinement_keeps_the_windows_correlation():
    """The response of a refined point is the Pearson correlation of its two windows: 1 for
    the same texture, the correlation coefficient of the windows for a noisy copy."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(96, 96)).astype(np.float32)
    valid = np.ones(ref.shape, bool)
    xy = np.array([[48.0, 48.0]])
    _, resp, ok = refine_by_correlation(ref, valid, ref, valid, np.eye(3), xy)
    assert ok[0] and resp[0] == pytest.approx(1.0, abs=1e-5)
    # points whose window leaves the image, or that are not finite, are left as they are,
    # and the points after them are still refined
    xy = np.array([[2.0, 2.0], [np.nan, 5.0], [48.0, 48.0]])
    out, resp, ok = refine_by_correlation(ref, valid, ref, valid, np.eye(3), xy)
    assert ok.tolist() == [False, False, True] and resp[:2].tolist() == [0.0, 0.0]
    assert out[0].tolist() == [2.0, 2.0]
    noisy = ref + rng.normal(size=ref.shape).astype(np.float32)
    centre = np.array([[48.0, 48.0]])
    _, resp, ok = refine_by_correlation(ref, valid, noisy, valid, np.eye(3), centre, window=32)
    win = (slice(32, 64), slice(32, 64))
    assert ok[0]
    assert resp[0] == pytest.approx(
        np.corrcoef(ref[win].ravel(), noisy[win].ravel())[0, 1], abs=1e-4
    )


@pytest.mark.parametrize("mirrored", [False, True])
def test_refit_keeps_the_inlier_threshold_in_coarse_reference_pixels(mirrored):
    """A coarse pass read at a quarter of the reference's resolution: its 3 px threshold is
    12 full-resolution px. Of 240 tie points (full-resolution px), 40 lie 30 px off the
    truth: the weighted refit keeps the 200 others and the true transform; a mirrored one
    too under ``--allow-reflection``, though no search hypothesis mirrored the image."""
    from sarreg.coarse import CoarseEstimate
    from sarreg.config import RegisterConfig, transform_model, with_values
    from sarreg.estimate import TiePoints, refit_refined
    from sarreg.geometry import fit_transform
    from sarreg.inputs import Inputs, RunContext

    rng = np.random.default_rng(0)
    xy_mov = rng.uniform(0, 2000, (240, 2))
    truth = np.array([[0.25, 0.0, 40.0], [0.0, 0.25, 60.0], [0.0, 0.0, 1.0]])
    if mirrored:
        truth[0, 0], truth[0, 2] = -0.25, 540.0
    xy_ref = apply_matrix(truth, xy_mov)
    xy_ref[:40] += [30.0, 0.0]
    n = len(xy_mov)
    tie = TiePoints(xy_ref, xy_mov, np.full(n, 0.9), np.ones(n), np.ones(n), np.full(n, -1))
    fit = fit_transform(xy_mov, xy_ref, "affine", 12.0)
    assert fit.n_inliers == 200
    config = with_values(
        RegisterConfig(),
        {"estimate.refine_tie_points": False, "estimate.allow_reflection": mirrored},
    )
    mov_info = raster_info((2000, 2000), path="m.tif")
    ctx = RunContext(Inputs("r.tif", "m.tif", None, mov_info), None, None, config, None)
    read = work_raster(4.0)
    coarse = CoarseEstimate(read, read, None, None, None, None, None, tie, fit)
    _, refit, _ = refit_refined(ctx, coarse, transform_model("affine"))
    assert refit is not fit and refit.n_inliers == 200
    np.testing.assert_allclose(refit.matrix, truth, atol=1e-6)


def test_a_mirrored_fit_passes_its_check_only_where_reflection_is_allowed():
    """check_fit takes ``--allow-reflection`` from the settings unless told otherwise."""
    from sarreg.config import EstimateConfig, transform_model
    from sarreg.errors import DegenerateTransformError
    from sarreg.estimate import check_fit

    mirror = np.array([[-1.0, 0.0, 255.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fit = fit_of(mirror, rmse=0.1)
    model = transform_model("affine")
    check_fit(fit, EstimateConfig(allow_reflection=True), model, (256, 256))
    check_fit(fit, EstimateConfig(), model, (256, 256), allow_reflection=True)
    for config, allow in ((EstimateConfig(), None), (EstimateConfig(allow_reflection=True), False)):
        with pytest.raises(DegenerateTransformError):
            check_fit(fit, config, model, (256, 256), allow_reflection=allow)
