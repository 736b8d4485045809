"""Large scenes (windowed registration), non-linear models, tie-point export and GCPs."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import box

from sarreg import scene
from sarreg.cli import main
from sarreg.config import EstimateConfig, InputConfig, OutputConfig, TilingConfig
from sarreg.geometry import apply_matrix, mapping_rmse, similarity_about_centre
from sarreg.mapping import fit_mapping
from sarreg.pipeline import RegisterConfig, register
from sarreg.uncertainty import true_error
from sarreg.warp import GridSpec, resample_to_grid


def _write(path, profile, data, transform):
    profile = dict(profile)
    profile.update(width=data.shape[1], height=data.shape[0], transform=transform, tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def _umbra_crop(data_dir, size):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        off = (ds.width - size) // 2
        win = Window(off, off, size, size)
        return ds.read(1, window=win), ds.profile, ds.window_transform(win)


@pytest.fixture(scope="module")
def large_pair(tmp_path_factory, data_dir):
    """A 1024 x 1024 Umbra crop and its copy warped by a known affine, with the same
    geotransform (the georeferencing is off by the warp). Returns (ref, mov, truth, shape)."""
    tmp = tmp_path_factory.mktemp("large")
    ref, profile, t = _umbra_crop(data_dir, 1024)
    w = similarity_about_centre(ref.shape, 3.0, 1.03, (7.3, -5.1))
    mov = cv2.warpAffine(ref, w[:2], ref.shape[::-1], flags=cv2.INTER_LINEAR)
    return (
        _write(tmp / "ref.tif", profile, ref, t),
        _write(tmp / "mov.tif", profile, mov, t),
        np.linalg.inv(w),
        ref.shape,
    )


@pytest.fixture(scope="module")
def quadratic_pair(tmp_path_factory, data_dir):
    """A 768 x 768 Umbra crop and a moving image showing it through a known quadratic mapping
    ``g`` (moving px -> reference px), same geotransform. Returns (ref, mov, g, shape)."""
    tmp = tmp_path_factory.mktemp("quad")
    ref, profile, t = _umbra_crop(data_dir, 768)
    c = (ref.shape[1] - 1) / 2.0

    def g(xy):
        x, y = xy[:, 0] - c, xy[:, 1] - c
        gx = xy[:, 0] + 3.0 + 4e-5 * x**2 - 2e-5 * x * y + 0.01 * y
        gy = xy[:, 1] - 2.0 + 3e-5 * y**2 + 2e-5 * x * y - 0.01 * x
        return np.stack([gx, gy], axis=1)

    ys, xs = np.mgrid[0 : ref.shape[0], 0 : ref.shape[1]]
    src = g(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64))
    mx = src[:, 0].reshape(ref.shape).astype(np.float32)
    my = src[:, 1].reshape(ref.shape).astype(np.float32)
    mov = cv2.remap(ref, mx, my, cv2.INTER_LINEAR)
    return (
        _write(tmp / "ref.tif", profile, ref, t),
        _write(tmp / "mov.tif", profile, mov, t),
        g,
        ref.shape,
    )


# ------------------------------------------------------------------------ windowed registration


def test_windowed_registration_matches_in_memory(large_pair, tmp_path):
    ref, mov, m_true, shape = large_pair
    mem = register(ref, mov, None, RegisterConfig())
    cfg = RegisterConfig(
        input=InputConfig(coarse_size=512),
        tiling=TilingConfig(window_size=900, tiles=2, size=448),
        output=OutputConfig(gcps=str(tmp_path / "t.csv")),
    )
    win = register(ref, mov, tmp_path / "o.tif", cfg)
    assert not mem.windowed and win.windowed
    # each estimate is ~0.05-0.15 px from the truth; a bookkeeping error (a half-pixel
    # shift, a wrong window offset or decimation) would put them >= 0.5 px apart
    # measured: 0.136, 0.047, 0.161
    assert mapping_rmse(win.matrix, mem.matrix, shape) < 0.2
    err_win = mapping_rmse(win.matrix, m_true, shape)
    err_mem = mapping_rmse(mem.matrix, m_true, shape)
    assert err_win < 0.08 and err_mem < 0.25
    # each report's predicted error within 2x of the true error (measured 0.083, 0.289)
    assert err_win / 2 < win.predicted_error < 2 * err_win
    assert err_mem / 2 < mem.predicted_error < 2 * err_mem
    rep = win.report
    assert rep["windowed"] and rep["coarse"]["decimation_ref"] == 2
    used = [t for t in rep["tiles"] if t["status"] == "used"]
    assert len(used) == 4 and rep["coarse"]["tiles_used"] == 4
    for t in used:  # full-resolution windows and per-tile residuals
        assert t["ref_window"][2:] == [448, 448]
        assert t["residuals"]["inliers"] > 20 and t["residuals"]["rmse_px"] < 1.5
    assert {tp["tile"] for tp in rep["tie_points"]} == {t["index"] for t in used}
    with rasterio.open(tmp_path / "o.tif") as o, rasterio.open(ref) as r:
        assert (o.width, o.height) == (r.width, r.height) and o.transform == r.transform
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == rep["matches"]
    tp0 = rep["tie_points"][0]
    assert float(rows[0]["mov_x"]) == pytest.approx(tp0["mov_px"][0])
    assert float(rows[0]["ref_map_y"]) == pytest.approx(tp0["ref_map"][1])
    assert float(rows[0]["residual_px"]) == pytest.approx(tp0["residual_px"])
    assert rows[0]["inlier"] in ("True", "False")


def test_in_memory_report_has_per_region_residuals(large_pair):
    # image no larger than the coarse read: coarse pass only, per-region residuals over a
    # tiles x tiles grid
    ref, mov, _, _ = large_pair
    res = register(ref, mov, None, RegisterConfig(tiling=TilingConfig(tiles=2)))
    assert not res.windowed and res.report["coarse"] is None
    assert len(res.tiles) == 4 and all(t["status"] == "region" for t in res.tiles)
    assert sum(t["residuals"]["tie_points"] for t in res.tiles) == res.n_matches


# -------------------------------------------------------------------------- non-linear models


def test_poly2_recovers_known_quadratic_warp(quadratic_pair, tmp_path):
    ref, mov, g, shape = quadratic_pair
    gj = tmp_path / "tie.geojson"
    cfg = RegisterConfig(
        estimate=EstimateConfig(transform="poly2"), output=OutputConfig(gcps=str(gj))
    )
    res = register(ref, mov, tmp_path / "o.tif", cfg)
    assert res.mapping is not None and res.model == "poly2"
    ys, xs = np.mgrid[16 : shape[0] - 16 : 16, 16 : shape[1] - 16 : 16]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    err = np.sqrt(np.mean(np.sum((res.mapping.forward(pts) - g(pts)) ** 2, axis=1)))
    err_affine = np.sqrt(np.mean(np.sum((apply_matrix(res.matrix, pts) - g(pts)) ** 2, axis=1)))
    assert err < 0.2, f"poly2 error {err:.3f} px"  # measured 0.131
    assert err / 2 < res.predicted_error < 2 * err  # measured 0.129
    assert err_affine > 3 * err  # the warp is really not affine
    # the inverse used for resampling inverts the forward mapping
    back = res.mapping.inverse(res.mapping.forward(pts))
    np.testing.assert_allclose(back, pts, atol=0.01)
    rep = res.report
    assert (
        rep["transform"]["mapping"]["degree"] == 2
        and "corrected_geotransform" not in (rep["transform"])
    )
    assert len(rep["tiles"]) == 16 and rep["loo_rmse_px"] < 1.5
    # resampled output follows the quadratic warp: it correlates with the reference
    with rasterio.open(tmp_path / "o.tif") as o, rasterio.open(ref) as r:
        a, b, valid = r.read(1).astype(float), o.read(1).astype(float), o.read_masks(1) > 0
    sel = valid.copy()
    sel[:40], sel[-40:], sel[:, :40], sel[:, -40:] = False, False, False, False
    assert np.corrcoef(a[sel], b[sel])[0, 1] > 0.95
    doc = json.loads(gj.read_text())
    assert doc["type"] == "FeatureCollection"
    assert doc["crs"]["properties"]["name"].startswith("urn:ogc:def:crs:EPSG::")
    assert len(doc["features"]) == rep["matches"]
    f0, tp0 = doc["features"][0], rep["tie_points"][0]
    assert f0["geometry"]["coordinates"] == pytest.approx(tp0["ref_map"])
    assert f0["properties"]["similarity"] == pytest.approx(tp0["similarity"])


def test_georef_nonlinear_writes_gcps_matching_report(quadratic_pair, tmp_path):
    ref, mov, _, _ = quadratic_pair
    out = tmp_path / "fixed.tif"
    cfg = RegisterConfig(
        estimate=EstimateConfig(transform="poly3"),
        output=OutputConfig(mode="georef", max_gcps=150),
    )
    res = register(ref, mov, out, cfg)
    gcp_tps = [tp for tp in res.report["tie_points"] if tp["gcp"]]
    assert 20 <= len(gcp_tps) <= 150 and res.report["gcps_written"] == len(gcp_tps)
    assert all(tp["inlier"] for tp in gcp_tps)
    with rasterio.open(out) as o, rasterio.open(ref) as r:
        gcps, crs = o.gcps
        assert crs == r.crs
    assert len(gcps) == len(gcp_tps)
    got = np.array([[g.col - 0.5, g.row - 0.5, g.x, g.y] for g in gcps])
    want = np.array([tp["mov_px"] + tp["ref_map"] for tp in gcp_tps])
    np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-3)  # float32 pixel/line
    np.testing.assert_allclose(got[:, 2:], want[:, 2:], atol=1e-6)


@pytest.mark.parametrize("model", ["poly2", "poly3", "tps"])
def test_fit_mapping_on_synthetic_tie_points(model):
    rng = np.random.default_rng(1)
    m = similarity_about_centre((2000, 2000), 2.0, 1.02, (5.0, -3.0))

    def f(p):
        q = apply_matrix(m, p)
        return q + np.stack([2e-6 * (p[:, 0] - 1000) ** 2, -1e-6 * (p[:, 1] - 1000) ** 2], 1)

    src = rng.uniform(0, 2000, (800, 2))
    dst = f(src) + rng.normal(0, 0.3, src.shape)
    dst[:80] += rng.uniform(-60, 60, (80, 2))  # outliers
    fit = fit_mapping(src, dst, model, threshold=3.0)
    assert fit.inliers[80:].mean() > 0.97 and fit.inliers[:80].mean() < 0.2
    grid = np.stack(np.meshgrid(np.arange(100, 1900, 100.0), np.arange(100, 1900, 100.0)), -1)
    grid = grid.reshape(-1, 2)
    assert np.sqrt(np.mean(np.sum((fit.mapping.forward(grid) - f(grid)) ** 2, 1))) < 0.3
    np.testing.assert_allclose(fit.mapping.inverse(fit.mapping.forward(grid)), grid, atol=0.01)
    assert fit.rmse < 0.6 and np.isfinite(fit.loo_rmse)


def test_warp_with_mapping_matches_matrix(large_pair, tmp_path):
    """A polynomial mapping that is exactly affine resamples like the 3x3 matrix."""
    _, mov, m_true, shape = large_pair
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 1024, (200, 2))
    mapping = fit_mapping(src, apply_matrix(m_true, src), "poly2", threshold=1.0).mapping
    grid = GridSpec(crs=None, transform=rasterio.Affine.identity(), width=700, height=600)
    a = resample_to_grid(mov, 1, m_true, grid, tmp_path / "a.tif", block_rows=256)
    b = resample_to_grid(mov, 1, mapping, grid, tmp_path / "b.tif", block_rows=512)
    assert a.valid_fraction == pytest.approx(b.valid_fraction, abs=0.01)
    with rasterio.open(a.path) as da, rasterio.open(b.path) as db:
        va, vb = da.read(1).astype(int), db.read(1).astype(int)
        both = (da.read_masks(1) > 0) & (db.read_masks(1) > 0)
    assert np.mean(np.abs(va - vb)[both] <= 1) > 0.99


# -------------------------------------------------------------------------------- tile planning


def test_plan_tiles_spread_over_overlap_even_windows():
    overlap = box(1000, 500, 5000, 3000)  # reference px
    wins = scene.plan_tiles(overlap, (4000, 6000), n=4, size=501)
    assert len(wins) == 16
    for w in wins:
        assert w.width == w.height == 500 and w.col_off % 2 == 0 and w.row_off % 2 == 0
        assert (
            box(w.col_off, w.row_off, w.col_off + 500, w.row_off + 500).intersection(overlap).area
            >= 0.5 * 500 * 500
        )
    xs = sorted({w.col_off for w in wins})
    assert xs[0] < 1500 and xs[-1] > 4000  # spread over the overlap, not the image
    # a tiny corner overlap gives the tiles that fit
    assert len(scene.plan_tiles(box(-0.5, -0.5, 300, 300), (4000, 6000), 4, 256)) >= 1


def test_overlap_uses_both_footprints():
    m = similarity_about_centre((1000, 1000), 0.0, 1.0, (600.0, 0.0))  # moving shifted right
    poly = scene.overlap_in_reference_pixels((1000, 1000), (1000, 1000), m)
    x0, y0, x1, y1 = poly.bounds
    assert x0 == pytest.approx(599.5) and x1 == pytest.approx(999.5)
    t = rasterio.Affine(10.0, 0, 500000, 0, -10.0, 4000000)
    poly_map = scene.overlap_in_reference_pixels((1000, 1000), (1000, 1000), m, t)
    assert poly_map.area == pytest.approx(poly.area, rel=1e-6)
    far = similarity_about_centre((1000, 1000), 0.0, 1.0, (5000.0, 0.0))
    assert scene.overlap_in_reference_pixels((1000, 1000), (1000, 1000), far).is_empty
    win = scene.moving_window(m, Window(700, 100, 200, 200), (1000, 1000), margin=11)
    assert win.col_off % 2 == 0 and win.width % 2 == 0 and win.col_off <= 100 - 11


# ------------------------------------------------------------------------------------ bad input


def test_gcps_export_bad_inputs(large_pair, tmp_path, capsys):
    ref, mov, _, _ = large_pair
    code = main(["register", str(ref), str(mov), "-o", str(tmp_path / "o.tif"), "--no-progress",
                 "--gcps", str(tmp_path / "t.shp")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 12 and "--gcps" in err and len(err.strip().splitlines()) == 1
    code = main(["register", str(ref), str(mov), "-o", str(tmp_path / "o.tif"), "--no-progress",
                 "--gcps", str(tmp_path / "no" / "dir" / "t.geojson")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 9 and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_windowed_no_overlap_and_unwritable(large_pair, tmp_path, capsys):
    ref, mov, _, _ = large_pair
    with rasterio.open(mov) as ds:
        profile, data, t = ds.profile, ds.read(1), ds.transform
    far = _write(tmp_path / "far.tif", profile, data, t @ t.translation(5000, 0))
    out = tmp_path / "out"
    out.mkdir()
    code = main(["register", str(ref), str(far), "-o", str(out / "o.tif"), "--window-size", "500"])
    err = capsys.readouterr().err
    assert code == 5 and "overlap" in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_windowed_reference_finer_than_moving(large_pair, tmp_path):
    """Moving at half the resolution (pixel size x2): tiles of the reference are read decimated
    by exactly 2, whole-pixel bins, and the result is as accurate as at equal resolution."""
    ref, mov, m_true, shape = large_pair
    with rasterio.open(mov) as ds:
        profile, data, t = ds.profile, ds.read(1), ds.transform
    half = cv2.resize(data, (shape[1] // 2, shape[0] // 2), interpolation=cv2.INTER_AREA)
    low = _write(tmp_path / "low.tif", profile, half, t @ rasterio.Affine.scale(2))
    s = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # low-res px -> moving px
    cfg = RegisterConfig(
        input=InputConfig(coarse_size=400), tiling=TilingConfig(window_size=500, tiles=2, size=192)
    )
    res = register(ref, low, None, cfg)
    assert res.windowed
    err = mapping_rmse(res.matrix, m_true @ s, half.shape)
    assert err < 0.2  # measured 0.111 (RMS over the image)
    # predicted error (at the moving image's corners and centre): not optimistic, within a
    # factor of 2 of the true error there (measured 0.255 / 0.159, 1.6x)
    true = true_error(res.matrix, m_true @ s, half.shape)
    assert true < res.predicted_error < 2 * true
    used = [t for t in res.tiles if t["status"] == "used"]
    assert len(used) == 4 and all(t["ref_window"][2] == 384 for t in used)


def test_windowed_skips_nodata_tiles(large_pair, tmp_path):
    """Tiles whose moving window is mostly nodata are skipped and reported as such."""
    ref, mov, m_true, shape = large_pair
    with rasterio.open(mov) as ds:
        profile, data, t = ds.profile, ds.read(1), ds.transform
    data = data.copy()
    data[:, shape[1] // 2 :] = 0
    half = _write(tmp_path / "half.tif", {**profile, "nodata": 0}, data, t)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cfg = RegisterConfig(
        input=InputConfig(coarse_size=400), tiling=TilingConfig(window_size=500, tiles=2, size=384)
    )
    res = register(ref, half, out_dir / "o.tif", cfg)
    status = [(t["status"], t.get("reason")) for t in res.tiles]
    assert status.count(("used", None)) == 2
    assert sum(s == "skipped" and "nodata" in r for s, r in status) == 2
    err = mapping_rmse(res.matrix, m_true, shape)
    assert err < 0.1  # measured 0.049 (half the tie points, on one side)
    # predicted error (at the moving image's corners and centre): not optimistic, within a
    # factor of 2 of the true error there with the tie points on one half (measured
    # 0.135 / 0.070, 1.93x)
    true = true_error(res.matrix, m_true, shape)
    assert true < res.predicted_error < 2 * true
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.json", "o.tif"]
