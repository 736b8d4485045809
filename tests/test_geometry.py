"""Transform fitting and georeferencing geometry, on synthetic matches and real GeoTIFF grids."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_bounds
from rasterio.transform import xy as rio_xy

from sarreg import geometry as g
from sarreg.errors import DegenerateTransformError, NoOverlapError, TooFewMatchesError

TRUE = {
    "translation": np.array([[1.0, 0, 12.3], [0, 1.0, -7.1], [0, 0, 1.0]]),
    "similarity": np.array(
        [
            [0.9 * np.cos(0.3), -0.9 * np.sin(0.3), 40.0],
            [0.9 * np.sin(0.3), 0.9 * np.cos(0.3), -20.0],
            [0, 0, 1.0],
        ]
    ),
    "affine": np.array([[1.05, 0.1, 30.0], [-0.05, 0.95, 10.0], [0, 0, 1.0]]),
    "homography": np.array([[1.02, 0.05, 10.0], [-0.03, 0.98, 5.0], [2e-5, -1e-5, 1.0]]),
}


def synthetic_matches(model: str, n: int = 300, outliers: float = 0.3, noise: float = 0.3, seed=1):
    """Matches following TRUE[model] plus Gaussian noise, with a fraction of random outliers."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 1000, (n, 2))
    dst = g.apply_matrix(TRUE[model], src) + rng.normal(0, noise, (n, 2))
    out = rng.random(n) < outliers
    dst[out] = rng.uniform(0, 1000, (out.sum(), 2))
    return src, dst, ~out


@pytest.mark.parametrize("model", g.MODELS)
def test_fit_recovers_transform_with_outliers(model):
    src, dst, good = synthetic_matches(model)
    fit = g.fit_transform(src, dst, model=model, threshold=3.0)
    assert fit.model == model
    assert fit.matrix.shape == (3, 3)
    np.testing.assert_array_equal(fit.inliers, good)
    assert fit.n_inliers == good.sum()
    grid = np.stack(np.meshgrid(np.linspace(0, 1000, 11), np.linspace(0, 1000, 11)), -1)
    grid = grid.reshape(-1, 2)
    err = np.abs(g.apply_matrix(fit.matrix, grid) - g.apply_matrix(TRUE[model], grid)).max()
    assert err < 0.3
    # noise 0.3 px per axis -> Euclidean RMS about 0.42 px
    assert 0.3 < fit.rmse < 0.55
    assert fit.rmse < fit.loo_rmse < 0.6
    assert fit.residuals.shape == (len(src),)
    assert np.all(fit.residuals[fit.inliers] <= 3.0)
    # the model family is respected
    if model != "homography":
        np.testing.assert_allclose(fit.matrix[2], [0, 0, 1])
    if model == "translation":
        np.testing.assert_allclose(fit.matrix[:2, :2], np.eye(2))
    if model == "similarity":
        a = fit.matrix[:2, :2]
        assert a[0, 0] == pytest.approx(a[1, 1]) and a[0, 1] == pytest.approx(-a[1, 0])


@pytest.mark.parametrize("model", g.MODELS)
def test_fit_is_reproducible(model):
    src, dst, _ = synthetic_matches(model, outliers=0.6, noise=1.0)
    a = g.fit_transform(src, dst, model, seed=3)
    b = g.fit_transform(src, dst, model, seed=3)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.inliers, b.inliers)


@pytest.mark.parametrize("model", ["translation", "similarity", "affine"])
def test_loo_closed_form_matches_explicit_refits(model):
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 1000, (25, 2))
    dst = g.apply_matrix(TRUE["affine"], src) + rng.normal(0, 0.5, (25, 2))
    w = rng.uniform(0.5, 1.0, 25)
    errs = []
    for i in range(25):
        keep = np.arange(25) != i
        m, _ = g._lstsq_linear(model, src[keep], dst[keep], w[keep])
        errs.append(((g.apply_matrix(m, src[i]) - dst[i]) ** 2).sum())
    assert g._loo_linear(model, src, dst, w) == pytest.approx(np.sqrt(np.mean(errs)), rel=1e-9)


def test_weights_steer_the_refit():
    src, dst, _ = synthetic_matches("translation", n=40, outliers=0.0, noise=0.0)
    dst[:20] += [1.0, 0.0]  # two clusters 1 px apart, both inliers
    w = np.r_[np.full(20, 1.0), np.full(20, 3.0)]
    fit = g.fit_transform(src, dst, "translation", weights=w)
    assert fit.matrix[0, 2] == pytest.approx(12.3 + 0.25)


def test_too_few_matches():
    src, dst, _ = synthetic_matches("affine", n=5, outliers=0.0)
    with pytest.raises(TooFewMatchesError, match=r"only 5 matches for an affine.*need >= 6"):
        g.fit_transform(src, dst, "affine")
    # enough matches but no consensus: random points
    rng = np.random.default_rng(0)
    with pytest.raises(TooFewMatchesError, match="--transform similarity"):
        g.fit_transform(rng.uniform(0, 1000, (40, 2)), rng.uniform(0, 1000, (40, 2)), "affine")


def test_check_plausible():
    g.check_plausible(np.eye(3), "affine")
    g.check_plausible(TRUE["homography"], "homography", shape=(1000, 1000))
    bad = {
        "non-finite": np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1.0]]),
        "singular": np.array([[1.0, 2, 0], [2, 4, 0], [0, 0, 1]]),
        "mirrored": np.diag([-1.0, 1, 1]),
        "scales": np.diag([20.0, 20, 1]),
        "perspective": np.array([[1.0, 0, 0], [0, 1, 0], [1e-3, 0, 1]]),
        "infinity": np.array([[1.0, 0, 0], [0, 1, 0], [-2e-3, 0, 1]]),
    }
    for what, m in bad.items():
        with pytest.raises(DegenerateTransformError, match=what):
            g.check_plausible(m, "homography", shape=(1000, 1000))
    with pytest.raises(DegenerateTransformError, match="scales"):
        g.check_plausible(np.diag([1.0, 0.05, 1]), "affine", scale_range=(0.1, 10))


def test_matrix_scale_rotation():
    scale, rot = g.matrix_scale_rotation(TRUE["similarity"])
    assert (scale, rot) == pytest.approx((0.9, np.degrees(0.3)))
    assert g.min_inliers("affine") == 6
    sr = g.decompose_matrix(TRUE["similarity"])
    assert sr.scale == pytest.approx(0.9)
    assert sr.rotation_deg == pytest.approx(np.degrees(0.3))
    assert sr.shear == pytest.approx(0.0, abs=1e-12)
    assert (sr.tx, sr.ty) == pytest.approx((40.0, -20.0))


def test_pixel_map_round_trip_rotated_umbra(data_dir):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        t = ds.transform
    assert t.b != 0  # rotated grid
    rng = np.random.default_rng(0)
    px = rng.uniform(-0.5, 1999.5, (50, 2))
    np.testing.assert_allclose(g.map_to_pixel(t, g.pixel_to_map(t, px)), px, atol=1e-6)
    cols, rows = np.array([0, 5, 1999]), np.array([0, 7, 1999])
    xs, ys = rio_xy(t, rows, cols, offset="center")
    mapped = g.pixel_to_map(t, np.stack([cols, rows], 1))
    np.testing.assert_allclose(mapped, np.stack([xs, ys], 1), atol=1e-6)


def _opera(data_dir):
    path = sorted((data_dir / "opera_rtc_s1").glob("*VH_cropped.tif"))[0]
    with rasterio.open(path) as ds:
        return ds.transform, ds.crs, ds.shape


def test_prior_between_different_crs(data_dir):
    t_ref, crs_ref, shape_ref = _opera(data_dir)
    fp = g.footprint_in_crs(t_ref, crs_ref, shape_ref, "EPSG:4326")
    west, south, east, north = fp.bounds
    shape_mov = (300, 400)
    t_mov = from_bounds(west, south, east, north, shape_mov[1], shape_mov[0])
    prior = g.prior_from_georef(t_ref, crs_ref, t_mov, "EPSG:4326")
    # reference pixel centres -> lon/lat -> moving pixels; the prior must bring them back
    p_ref = np.array([[0.0, 0.0], [100.0, 50.0], [249.0, 349.0], [10.5, 300.25]])
    p_mov = g.map_to_pixel(
        t_mov, g.reproject_xy(g.pixel_to_map(t_ref, p_ref), crs_ref, "EPSG:4326")
    )
    np.testing.assert_allclose(prior(p_mov), p_ref, atol=1e-6)
    # the affine initial guess from georeferencing is close over a ~10 km area
    m = g.matrix_from_georef(t_ref, crs_ref, t_mov, "EPSG:4326", shape_mov, model="affine")
    assert np.abs(g.apply_matrix(m, p_mov) - p_ref).max() < 0.1
    frac = g.check_overlap(t_ref, crs_ref, shape_ref, t_mov, "EPSG:4326", shape_mov)
    assert frac > 0.95


def test_corrected_geotransform_consistency(data_dir):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        t_ref = ds.transform
    m = TRUE["similarity"]
    t_mov = g.corrected_geotransform(t_ref, m)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (20, 2))
    np.testing.assert_allclose(
        g.pixel_to_map(t_mov, xy), g.pixel_to_map(t_ref, g.apply_matrix(m, xy)), atol=1e-6
    )
    # identity M gives back the reference transform
    assert g.corrected_geotransform(t_ref, np.eye(3)).almost_equals(t_ref)
    with pytest.raises(ValueError, match="affine"):
        g.corrected_geotransform(t_ref, TRUE["homography"])
    # M from georeferencing of a shifted grid, then corrected transform = that grid
    t_shift = t_ref @ Affine.translation(10, -3)
    m_geo = g.matrix_from_georef(t_ref, "EPSG:32759", t_shift, "EPSG:32759", (100, 100))
    assert g.corrected_geotransform(t_ref, m_geo).almost_equals(t_shift, precision=1e-6)


def test_footprints_and_no_overlap(data_dir):
    t_ref, crs, shape = _opera(data_dir)
    fp = g.footprint(t_ref, shape)
    assert fp.area == pytest.approx(shape[0] * shape[1] * 30.0 * 30.0)
    half = t_ref @ Affine.translation(shape[1] / 2, 0)
    assert g.overlap_fraction(t_ref, crs, shape, half, crs, shape) == pytest.approx(0.5)
    far = t_ref @ Affine.translation(shape[1] + 10, 0)
    with pytest.raises(NoOverlapError, match="ref.tif and mov.tif do not overlap"):
        g.check_overlap(t_ref, crs, shape, far, crs, shape, "ref.tif", "mov.tif")


def test_similarity_about_centre_and_mapping_rmse():
    from sarreg.geometry import apply_matrix, mapping_rmse, similarity_about_centre

    m = similarity_about_centre((101, 201), 30.0, 2.0, (0.0, 0.0))
    np.testing.assert_allclose(apply_matrix(m, [[100.0, 50.0]]), [[100.0, 50.0]])  # centre fixed
    np.testing.assert_allclose(np.linalg.det(m[:2, :2]), 4.0)
    shift = similarity_about_centre((64, 64), 0.0, 1.0, (3.0, 4.0))
    assert mapping_rmse(shift, np.eye(3), (64, 64)) == pytest.approx(5.0)
    assert mapping_rmse(m, m, (101, 201)) == 0.0


def test_translation_fits_tie_points_that_all_coincide():
    """A translation needs one point: matches that all sit at the same place (a single
    repeated tie point) give its shift, not a numerical failure."""
    src = np.tile([[120.0, 80.0]], (g.MIN_INLIERS["translation"] + 3, 1))
    fit = g.fit_transform(src, src + [4.5, -2.25], "translation")
    np.testing.assert_allclose(fit.matrix, [[1, 0, 4.5], [0, 1, -2.25], [0, 0, 1]], atol=1e-9)
    assert fit.n_inliers == len(src)


def test_similarity_fit_finds_the_similarity_consensus_not_a_larger_shear_one():
    """45 % of the matches follow a similarity, 55 % a strong shear (which no similarity
    explains): a similarity fit returns the similarity and its matches as inliers."""
    rng = np.random.default_rng(3)
    s_true = g.similarity_about_centre((1000, 1000), 3.0, 1.02, (6.0, -4.0))
    shear = np.array([[1.0, 0.35, -20.0], [0.25, 1.0, 15.0], [0, 0, 1.0]])
    src = rng.uniform(0, 1000, (400, 2))
    on_sim = np.arange(400) < 180
    dst = np.where(on_sim[:, None], g.apply_matrix(s_true, src), g.apply_matrix(shear, src))
    dst = dst + rng.normal(0, 0.3, dst.shape)
    fit = g.fit_transform(src, dst, "similarity", threshold=2.0)
    assert g.mapping_rmse(fit.matrix, s_true, (1000, 1000)) < 0.1
    np.testing.assert_array_equal(fit.inliers, on_sim)
