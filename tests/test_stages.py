"""The registration stages: one raster opener (GDAL virtual files end to end), one
coarse-to-fine path (coarse only for small images, tiles over the overlap for larger ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarreg.cli import main
from sarreg.geometry import mapping_rmse
from sarreg.uncertainty import true_error

DEMO = Path("data/demo")


@pytest.fixture()
def vsimem_moving():
    """The demo moving image copied into GDAL's in-memory file system."""
    name = "/vsimem/sarreg_test/moving.tif"
    with rasterio.open(DEMO / "moving.tif") as src:
        profile, data = src.profile, src.read()
    with rasterio.open(name, "w", **profile) as dst:
        dst.write(data)
    yield name
    from rasterio.shutil import delete

    delete(name)


@pytest.mark.parametrize("mode", ["resample", "georef"])
def test_vsimem_moving_image_registers_end_to_end(vsimem_moving, tmp_path, mode, capsys):
    out = tmp_path / "o.tif"
    code = main(["register", str(DEMO / "reference.tif"), vsimem_moving, "-o", str(out),
                 "--mode", mode, "--transform", "similarity", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rep = json.loads(out.with_suffix(".json").read_text())
    truth = np.array(json.loads((DEMO / "truth.json").read_text())["matrix_mov_to_ref"])
    assert rep["moving"]["path"] == vsimem_moving
    # the demo pair differs by a similarity, fitted as one (affine: 0.483 px)
    err = mapping_rmse(np.array(rep["transform"]["pixel_matrix"]), truth, (250, 350))
    assert err < 0.42  # measured 0.317
    assert err / 2 < rep["error_estimate"]["rms_px"] < 2 * err  # measured 0.456
    with rasterio.open(DEMO / "reference.tif") as r:  # in metres: reference px x pixel size
        size = float(np.sqrt(abs(r.transform.a * r.transform.e - r.transform.b * r.transform.d)))
    est = rep["error_estimate"]
    assert est["rms_map_units"] == pytest.approx(est["rms_px"] * size, rel=1e-3, abs=1e-3)
    # no tiles, no search: the one attempt is the coarse fit on all the matches
    (attempt,) = rep["search"]["tried"]
    assert not rep["search"]["searched"] and rep["coarse"] is None
    assert attempt["inlier_share"] == round(attempt["inliers"] / rep["matches"], 4)
    assert 0.9 * rep["inliers"] <= attempt["inliers"] <= rep["matches"]
    with rasterio.open(out) as o, rasterio.open(vsimem_moving) as m:
        assert o.read(1).any()
        if mode == "georef":  # the moving pixels, unchanged
            assert np.array_equal(o.read(1), m.read(1), equal_nan=True)


@pytest.fixture(scope="module")
def umbra_1024(tmp_path_factory, data_dir):
    """A 1024 x 1024 Umbra crop and its copy warped by a known affine (same geotransform: the
    georeferencing is off by the warp). Returns (ref, mov, truth mov->ref, shape)."""
    import cv2
    from rasterio.windows import Window

    from sarreg.geometry import similarity_about_centre

    tmp = tmp_path_factory.mktemp("u1024")
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        win = Window(300, 500, 1024, 1024)
        ref, t, profile = ds.read(1, window=win), ds.window_transform(win), ds.profile
    w = similarity_about_centre(ref.shape, -2.0, 0.98, (-6.4, 8.9))
    mov = cv2.warpAffine(ref, w[:2], ref.shape[::-1], flags=cv2.INTER_LINEAR)
    profile.update(width=1024, height=1024, transform=t, tiled=False)
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    paths = []
    for name, data in (("ref.tif", ref), ("mov.tif", mov)):
        with rasterio.open(tmp / name, "w", **profile) as ds:
            ds.write(data, 1)
        paths.append(tmp / name)
    return paths[0], paths[1], np.linalg.inv(w), ref.shape


def test_coarse_only_and_tiled_give_the_same_transform(umbra_1024):
    """The same pair once small enough for the coarse pass alone (no tiles) and once with a
    coarse read of half the size, refined on full-resolution tiles: same transform."""
    from sarreg.config import InputConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    alone = register(ref, mov, None, RegisterConfig())
    tiled = register(ref, mov, None, RegisterConfig(input=InputConfig(coarse_size=512)))
    assert not alone.windowed and alone.report["coarse"] is None
    assert all(t["status"] == "region" for t in alone.tiles)
    assert tiled.windowed and tiled.report["coarse"]["decimation_ref"] == 2
    assert tiled.report["coarse"]["refined_by_tiles"] is True
    # inliers: within 3 px of the reads the tie points come from (the full-resolution tiles;
    # the coarse reads of an image that fits the coarse pass)
    assert tiled.report["threshold_px"] == alone.report["threshold_px"] == 3.0
    # the coarse fit's RANSAC threshold is in coarse pixels: on this clean pair nearly every
    # match is an inlier (measured 0.977; the same threshold in full-resolution pixels: 0.904)
    coarse = tiled.report["coarse"]
    assert coarse["inliers"] >= 0.95 * coarse["matches"]
    used = [t for t in tiled.tiles if t["status"] == "used"]
    assert len(used) >= 3 and tiled.report["tile_grid"]["chosen"] == "auto"
    # the automatic grid never covers the whole overlap (no dense pass)
    covered = sum(t["ref_window"][2] * t["ref_window"][3] for t in tiled.report["tiles"])
    assert covered <= 0.55 * shape[0] * shape[1]
    # measured 0.076, 0.041, 0.040 (0.082, 0.039, 0.052 with two levels read whole)
    assert mapping_rmse(tiled.matrix, alone.matrix, shape) < 0.11
    err_tiled = mapping_rmse(tiled.matrix, truth, shape)
    err_alone = mapping_rmse(alone.matrix, truth, shape)
    assert err_tiled < 0.07 and err_alone < 0.07
    # predicted errors within 2x of the true ones (measured 0.069, 0.069)
    assert err_tiled / 2 < tiled.predicted_error < 2 * err_tiled
    assert err_alone / 2 < alone.predicted_error < 2 * err_alone
    # the 512 px coarse read runs the georeferenced pyramid; the 1024 px image read whole is
    # larger than 768 x 768 pixels: its first level alone, at 724 px
    assert tiled.report["pyramid"]["coarse"] == pytest.approx([1.0, 2**-0.5])
    assert alone.report["pyramid"]["coarse"] == pytest.approx([2**-0.5])
    assert alone.report["pyramid"]["tiles"] == tiled.report["pyramid"]["tiles"] == [1.0]


def test_the_coarse_pass_that_seeds_tiles_keeps_fewer_keypoints(umbra_1024):
    """``tiling.coarse_top_k``: the coarse pass under tiles keeps 2000 keypoints per image
    (instead of ``extract.top_k``, 5000); the tiles give the same transform."""
    from sarreg.config import InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    few = register(ref, mov, None, RegisterConfig(input=InputConfig(coarse_size=512)))
    many = register(ref, mov, None, RegisterConfig(
        input=InputConfig(coarse_size=512), tiling=TilingConfig(coarse_top_k=None)
    ))  # fmt: skip
    assert few.report["coarse"]["keypoints"] == [2000, 2000]
    assert min(many.report["coarse"]["keypoints"]) > 2500
    assert few.report["coarse"]["matches"] < many.report["coarse"]["matches"]
    assert few.windowed and many.windowed
    # measured 0.000 px apart (the same tiles' tie points), 0.041 px from the truth
    assert mapping_rmse(few.matrix, many.matrix, shape) < 0.03
    assert mapping_rmse(few.matrix, truth, shape) < 0.07


def test_the_coarse_pass_that_seeds_tiles_runs_a_smaller_level(umbra_1024):
    """``tiling.coarse_max_level``: a 768 px coarse read of ``umbra_1024`` runs 1 and 0.71
    as the result, but 0.5 alone (384 px) when tiles follow; the tiles give the same
    transform as from the full pyramid. The report's pyramid and coarse entry say so."""
    from sarreg.config import InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    small = register(ref, mov, None, RegisterConfig(input=InputConfig(coarse_size=768)))
    full = register(ref, mov, None, RegisterConfig(
        input=InputConfig(coarse_size=768), tiling=TilingConfig(coarse_max_level=None)
    ))  # fmt: skip
    assert small.windowed and full.windowed
    assert small.report["pyramid"]["coarse"] == pytest.approx([1.0, 2**-0.5])
    assert small.report["pyramid"]["coarse_before_tiles"] == pytest.approx([0.5])
    assert small.report["coarse"]["scales"] == pytest.approx([0.5])
    assert full.report["coarse"]["scales"] == pytest.approx([1.0, 2**-0.5])
    assert mapping_rmse(small.matrix, full.matrix, shape) < 0.03
    assert mapping_rmse(small.matrix, truth, shape) < 0.07


def test_tile_grid_rule():
    from sarreg.scene import tile_grid

    assert tile_grid(2048**2, linear=True) == (2, 384)
    assert tile_grid(4096**2, linear=True) == (2, 384)
    assert tile_grid(10000**2, linear=True) == (3, 384)
    assert tile_grid(10000**2, linear=False) == (4, 384)
    n, size = tile_grid(1000**2, linear=True)  # shrunk: at most half the overlap
    assert n == 2 and size == 352 and n * n * size * size <= 0.5 * 1000**2
    assert tile_grid(300**2, linear=True) == (1, 256)
    assert tile_grid(4096**2, linear=True, tiles=5, tile_size=300) == (5, 300)


@pytest.mark.parametrize(
    ("dec_ref", "dec_mov", "prior_scale", "tiled"),
    [
        (1.0, 1.0, None, False),  # read as they are: the coarse fit is the registration
        (1.01, 1.0, None, False),  # within 2 %: tiles would read the same pixels
        (1.05, 1.0, None, True),
        (1.0, 1.05, None, True),
        (1.5, 1.0, None, True),
        (1.0, 1.5, None, True),
        (2.0, 1.0, 2.0, False),  # the finer reference is read at the moving pixel size anyway
        (2.5, 1.0, 2.0, True),
        (1.0, 2.0, 0.5, False),
        (1.0, 2.5, 0.5, True),
        (1.0, 1.0, 1.0, False),
    ],
)
def test_tiles_only_when_the_coarse_read_is_decimated_beyond_the_tiles(
    dec_ref, dec_mov, prior_scale, tiled
):
    from types import SimpleNamespace

    from sarreg.coarse import needs_tiles

    ref, mov = SimpleNamespace(decimation=dec_ref), SimpleNamespace(decimation=dec_mov)
    assert needs_tiles(ref, mov, prior_scale) is tiled


def test_moving_image_with_too_few_keypoints_is_refused_as_featureless(tmp_path, capsys):
    """A moving image valid only on 16 x 16 pixels gives 3 keypoints: refused (exit 6) as
    featureless, naming the moving image and what it holds, before any matching; no output."""
    with rasterio.open(DEMO / "moving.tif") as src:
        profile, data = src.profile, src.read(1).astype(np.float32)
    valid = np.zeros(data.shape, bool)
    valid[100:116, 100:116] = True
    data[~valid] = -9999.0
    profile.update(dtype="float32", nodata=-9999.0, count=1)
    mov = tmp_path / "mostly_nodata.tif"
    with rasterio.open(mov, "w", **profile) as dst:
        dst.write(data, 1)
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    args = ["register", str(DEMO / "reference.tif"), str(mov), "-o", str(out), "--no-progress"]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 6, err
    assert err.startswith("sarreg: error: the moving image") and "gave only" in err
    assert "featureless" in err and len(err.splitlines()) == 1
    assert list(out.parent.iterdir()) == []


@pytest.fixture(scope="module")
def umbra_half(umbra_1024, tmp_path_factory):
    """The moving image of ``umbra_1024`` at half the resolution (512 x 512, INTER_AREA; its
    geotransform's pixels twice as large). Returns (path, truth half-res mov -> ref px)."""
    import cv2
    from affine import Affine

    _, mov_full, truth_full, _ = umbra_1024
    with rasterio.open(mov_full) as ds:
        data, profile = ds.read(1), ds.profile
    half = cv2.resize(data, (512, 512), interpolation=cv2.INTER_AREA)
    profile.update(width=512, height=512, transform=profile["transform"] @ Affine.scale(2.0))
    path = tmp_path_factory.mktemp("half") / "mov_half.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(half, 1)
    # moving pixel centre (u, v) is the centre of full-resolution pixels 2u..2u+1
    return path, truth_full @ np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    ("finer", "tile_size", "size_px"),
    [
        ("reference", None, 720),
        ("reference", 181, 360),
        ("moving", None, 354),
        ("moving", 150, 150),
    ],
)
def test_tiles_of_the_finer_image_are_read_at_the_coarser_pixel_size(
    umbra_1024, umbra_half, finer, tile_size, size_px
):
    """The 1024 px reference against its 512 px moving copy (``umbra_half``), and the other
    way round, registered with a 256 px coarse read. The finer image's tiles are read
    decimated by 2 (the coarser pixel size) in windows of whole 2 x 2 bins (reference tile
    sizes and moving window sizes: multiples of 4 px), each tile keeps nearly all its matches
    under a threshold of 3 tile pixels, and the result is within 0.3 reference px of the truth with
    the predicted error between half and 2.5 times the true one."""
    from sarreg.config import InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref_full, _, _, _ = umbra_1024
    half, truth = umbra_half
    ref, mov, shape = (
        (ref_full, half, (512, 512)) if finer == "reference" else (half, ref_full, (1024, 1024))
    )
    if finer == "moving":
        truth = np.linalg.inv(truth)
    config = RegisterConfig(input=InputConfig(coarse_size=256), tiling=TilingConfig(size=tile_size))
    res = register(ref, mov, None, config)
    grid = res.report["tile_grid"]
    decimation = [2.0, 1.0] if finer == "reference" else [1.0, 2.0]
    assert res.windowed and [grid["decimation_ref"], grid["decimation_mov"]] == decimation
    assert grid["size_px"] == size_px
    used = [t for t in res.tiles if t["status"] == "used"]
    assert used
    # inlier share measured 1050 / 1052 (reference finer, automatic grid), 448 / 499 on the
    # 150 px tiles
    share = 0.95 if tile_size is None else 0.85
    # --ransac-threshold (3) in tile pixels, given in full-resolution reference px
    assert grid["threshold_px"] == res.report["threshold_px"] == 3.0 * decimation[0]
    for t in used:
        assert t["decimation"] == decimation
        assert t["threshold_px"] == 3.0 * decimation[0]
        assert t["tile_inliers"] >= share * t["matches"], t
        if finer == "moving":
            col, row, width, height = t["mov_window"]  # even offsets, sizes of whole bins
            assert (col % 2, row % 2, width % 4, height % 4) == (0, 0, 0, 0), t["mov_window"]
    err = mapping_rmse(res.matrix, truth, shape)
    assert err < 0.3  # measured 0.224 px (reference finer), 0.151 (moving finer), 0.28 / 0.09
    # predicted error against the true error at the points it is made for, the moving image's
    # corners and centre: reference finer 0.349 / 0.338 px (1.03x), moving finer 0.313 / 0.228
    # (1.37x); on the 150 px tiles 0.533 / 0.413 (1.29x), 0.142 / 0.135 (1.05x)
    true = true_error(res.matrix, truth, shape)
    assert true < res.predicted_error < 2 * true


def test_moving_windows_are_whole_bins_that_stay_even_after_decimation():
    """The smallest multiple of an integer decimation d that is even after it is 2 d; a
    fractional decimation has no whole bins, its windows are only even."""
    from sarreg.tiles import read_multiple

    for d in range(1, 9):
        m = read_multiple(float(d))
        assert m % d == 0 and (m // d) % 2 == 0
        assert not any(k % d == 0 and (k // d) % 2 == 0 for k in range(1, m))
    assert read_multiple(1.5) == read_multiple(2.25) == 2


@pytest.mark.parametrize(
    ("valid_ref", "valid_mov", "min_valid", "skipped"),
    [
        (0.9, 0.45, 0.8, False),  # the moving window needs half of min_valid
        (0.9, 0.39, 0.8, True),
        (0.8, 1.0, 0.8, False),
        (0.79, 1.0, 0.8, True),
        (0.6, 0.3, 0.5, False),  # the default 0.5
        (0.6, 0.24, 0.5, True),
        (0.1, 0.0, 0.0, False),  # min_valid 0: nothing is mostly nodata
    ],
)
def test_a_tile_is_mostly_nodata_below_min_valid(valid_ref, valid_mov, min_valid, skipped):
    from sarreg.tiles import mostly_nodata

    assert mostly_nodata(valid_ref, valid_mov, min_valid) is skipped


def test_a_flat_or_unmasked_tile_is_featureless():
    """A flat reference tile of an 8-bit display image (calm water: 100 +- 1 of 255, not
    stretched; std 0.004) is featureless, the same tile at full 8-bit contrast is not, and a
    tile with no pixel that may hold a keypoint in either image is."""
    from sarreg.tiles import TILE_MIN_CONTRAST, featureless

    rng = np.random.default_rng(0)
    flat = (100.0 + rng.integers(-1, 2, (64, 64))) / 255.0
    speckle = rng.integers(0, 256, (64, 64)) / 255.0
    every, none = np.ones((64, 64), bool), np.zeros((64, 64), bool)
    assert float(flat.std()) < TILE_MIN_CONTRAST
    assert featureless(flat, every, every)
    assert not featureless(speckle, every, every)
    assert featureless(speckle, none, every) and featureless(speckle, every, none)
    # only the keypoint pixels count: a flat area around a textured border strip
    mixed, inner = speckle.copy(), none.copy()
    mixed[8:56, 8:56], inner[8:56, 8:56] = flat[8:56, 8:56], True
    assert not featureless(mixed, every, every) and featureless(mixed, inner, every)


def test_a_tiled_estimate_counts_only_the_tiles_it_used():
    from sarreg.tiles import TiledEstimate, TileRecord, TileStatus

    records = [TileRecord(0, [0, 0, 8, 8], TileStatus.used), TileRecord(1, [8, 0, 8, 8]),
               TileRecord(2, [0, 8, 8, 8], TileStatus.region)]  # fmt: skip
    assert [r.index for r in TiledEstimate(records, None, None, 3).used] == [0]
    assert records[1].to_dict() == {"index": 1, "ref_window": [8, 0, 8, 8], "status": "skipped"}


@pytest.mark.parametrize("model", ["affine", "poly2"])
def test_tiles_of_a_rotated_moving_image_are_turned_as_the_coarse_pass_found(
    umbra_1024, tmp_path, model
):
    """The moving image of ``umbra_1024`` turned by 90 deg, without georeferencing, and a
    512 px coarse read: the search finds the rotation on the coarse pass, and every
    full-resolution tile is turned the same way before extraction (else its matches would
    not agree): several tiles used, each keeping nearly all its matches, and the result
    within 0.06 px of the truth with the predicted error within 2x. The same with a
    non-linear model (poly2), fitted globally on the tie points as they are (it cannot be
    composed with the turn)."""
    from sarreg.config import EstimateConfig, InputConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    with rasterio.open(mov) as ds:
        data = ds.read(1)
    turned = np.rot90(data).copy()  # turned[r, c] = data[c, W - 1 - r]
    path = tmp_path / "turned.tif"
    with rasterio.open(path, "w", driver="GTiff", width=turned.shape[1],
                       height=turned.shape[0], count=1, dtype=turned.dtype) as ds:  # fmt: skip
        ds.write(turned, 1)
    w = data.shape[1]
    to_mov = np.array([[0.0, -1.0, w - 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    config = RegisterConfig(input=InputConfig(coarse_size=512),
                            estimate=EstimateConfig(transform=model))  # fmt: skip
    res = register(ref, path, None, config)
    assert res.windowed and res.model == model
    used = [t for t in res.tiles if t["status"] == "used"]
    assert len(used) >= 3
    for t in used:
        assert t["tile_inliers"] >= 0.9 * t["matches"], t
        # each tile's residuals are of its own tie points
        assert t["residuals"]["tie_points"] == t["tie_points"], t
    hyp = res.report["search"]["hypothesis"]  # the moving image is turned back
    assert (hyp["rotation_deg"], hyp["flip"], hyp["scale"]) == (270.0, False, 1.0)
    err = mapping_rmse(res.matrix, truth @ to_mov, turned.shape)
    assert err < 0.06  # measured 0.044 (affine), 0.019 (poly2); predicted 0.075, 0.037
    assert err / 2 < res.predicted_error < 2 * err


@pytest.mark.parametrize(
    ("ground", "reason"),
    [("speckle", "too few matches "), ("constant", "featureless (con")],
)
def test_a_tile_over_changed_ground_is_skipped_and_the_others_register(
    umbra_1024, tmp_path, ground, reason, caplog
):
    """The moving image of ``umbra_1024`` with its top-left quadrant replaced by speckle
    noise (ground that changed completely) or by one value (a saturated or blanked area, not
    nodata), tiled from a 512 px coarse read: the tile over it finds too few matches near the
    coarse prediction, or has no contrast, and is skipped, naming why (no unguided matching
    there); the three others register the pair, as the log says."""
    import logging

    from sarreg.config import InputConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    with rasterio.open(mov) as ds:
        data, profile = ds.read(1), ds.profile
    rng = np.random.default_rng(0)
    mean = float(np.nanmean(data))
    data[:512, :512] = rng.gamma(1.0, mean, (512, 512)) if ground == "speckle" else mean
    changed = tmp_path / "changed.tif"
    with rasterio.open(changed, "w", **profile) as ds:
        ds.write(data, 1)
    with caplog.at_level(logging.INFO, logger="sarreg.tiles"):
        res = register(ref, changed, None, RegisterConfig(input=InputConfig(coarse_size=512)))
    assert any(r.getMessage().startswith("3 of 4 tiles (2 x 2, ") for r in caplog.records)
    status = [(t["status"], (t.get("reason") or "")[:16]) for t in res.tiles]
    assert status == [("skipped", reason)] + [("used", "")] * 3
    err = mapping_rmse(res.matrix, truth, shape)
    assert err < 0.075  # measured 0.054 px (the same three tiles either way)
    # predicted 0.151 (speckle) and 0.130 (constant) against 0.081 at the moving image's
    # corners and centre: 1.86x and 1.60x, conservative with a quarter of the image changed
    true = true_error(res.matrix, truth, shape)
    assert true < res.predicted_error < 2 * true


def test_window_size_is_a_deprecated_no_op(caplog):
    """``window_size`` (``--window-size``) logs that it is deprecated and changes nothing."""
    import logging

    from sarreg.config import TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov = DEMO / "reference.tif", DEMO / "moving.tif"
    with caplog.at_level(logging.WARNING, logger="sarreg.pipeline"):
        plain = register(ref, mov, None, RegisterConfig())
        assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
        old = register(ref, mov, None, RegisterConfig(tiling=TilingConfig(window_size=128)))
    (warning,) = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "--window-size" in warning.getMessage()
    np.testing.assert_array_equal(old.matrix, plain.matrix)


@pytest.mark.parametrize(
    ("model", "top_k", "reason", "bound"),
    [
        ("affine", 4, "(featureless (4 keypoints))", 0.24),
        ("homography", 4, "(featureless (4 keypoints))", 0.51),
        # as many keypoints as a tile needs: matched, with too few matches
        ("affine", 8, "(too few matches (only 0 matches", 0.24),
    ],
)
def test_when_no_tile_gives_tie_points_the_coarse_fit_is_the_result(
    umbra_1024, model, top_k, reason, bound
):
    """Every tile of ``umbra_1024`` (512 px coarse read) keeps ``top_k`` keypoints
    (``tiling.top_k``): 4, fewer than a tile is matched with (8), skips all as featureless;
    8 are matched, and too few of them. The coarse pass's fit of the configured model
    (refitted when the coarse pass fits another) is then the result, at coarse precision; the
    report says the tiles failed and why, and nothing is "windowed"."""
    from sarreg.config import EstimateConfig, InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    config = RegisterConfig(input=InputConfig(coarse_size=512), tiling=TilingConfig(top_k=top_k),
                            estimate=EstimateConfig(transform=model))  # fmt: skip
    res = register(ref, mov, None, config)
    coarse = res.report["coarse"]
    assert not res.windowed and res.report["windowed"] is False
    assert coarse["refined_by_tiles"] is False and coarse["tiles_used"] == 0
    assert coarse["tiles_failed"].startswith("none of the 4 tiles")
    assert reason in coarse["tiles_failed"]
    # the result's coarse pass is redone with all its keypoints (2000 only seed the tiles)
    assert min(coarse["keypoints"]) > 2500
    assert coarse["scales"] == res.report["pyramid"]["coarse"]
    assert res.model == model and {t["status"] for t in res.tiles} == {"region"}
    assert len(res.tiles) == 16  # residuals of a 4 x 4 grid of regions
    # the coarse tie points' threshold: 3 coarse px, decimation 2
    assert res.report["threshold_px"] == 6.0
    err = mapping_rmse(res.matrix, truth, shape)
    # measured 0.184 px (affine), 0.390 (homography, refitted on the coarse tie points)
    assert err < bound
    # predicted 0.342 and 0.904 against 0.280 and 0.782 at the moving image's corners and
    # centre (1.22x, 1.16x)
    true = true_error(res.matrix, truth, shape)
    assert true < res.predicted_error < 2 * true


def test_tiles_with_fewer_inliers_than_min_inliers_are_skipped(umbra_1024):
    """``umbra_1024`` from a 512 px coarse read gives tiles of 986, 687, 988 and 554 inliers:
    with ``--min-inliers 700`` the two smaller ones are skipped (naming their inlier count)
    and the two others register the pair (each keeping up to 1000 tie points, so that the
    global fit has 700 too)."""
    import re

    from sarreg.config import EstimateConfig, InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    config = RegisterConfig(input=InputConfig(coarse_size=512),
                            tiling=TilingConfig(max_points=1000),
                            estimate=EstimateConfig(min_inliers=700))  # fmt: skip
    res = register(ref, mov, None, config)
    assert res.windowed
    used = [t for t in res.tiles if t["status"] == "used"]
    skipped = [t for t in res.tiles if t["status"] == "skipped"]
    assert len(used) == 2 and len(skipped) == 2
    assert all(t["tile_inliers"] >= 700 for t in used)
    for t in skipped:
        found = re.fullmatch(r"too few inliers \((\d+)\)", t["reason"])
        assert found and int(found.group(1)) < 700, t["reason"]
    err = mapping_rmse(res.matrix, truth, shape)
    assert err < 0.15  # measured 0.112 (tie points on two tiles of the four)


def test_the_final_fit_is_verified_not_the_coarse_one(data_dir):
    """``check_result`` verifies the fit the estimate stages end with: on the demo pair, the
    estimate's own fit passes, the same fit moved by 12 px (as a wrong refit would be) is
    refused (exit 7), though the coarse pass's fit it replaces was verified and passed."""
    from dataclasses import replace

    from sarreg import pipeline
    from sarreg.errors import VerificationError

    ctx = pipeline.open_context(
        str(DEMO / "reference.tif"), str(DEMO / "moving.tif"), pipeline.RegisterConfig()
    )
    est = pipeline.estimate(ctx)
    assert est.coarse.verification.verdict.value == "pass"
    moved = np.array([[1.0, 0.0, 12.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ est.fit.matrix
    wrong = replace(est, fit=replace(est.fit, matrix=moved))
    assert pipeline.check_result(ctx, est)["verification"]["verdict"] == "pass"
    with pytest.raises(VerificationError) as exc:
        pipeline.check_result(ctx, wrong)
    assert exc.value.exit_code == 7


def test_when_no_tile_gives_tie_points_the_coarse_pass_is_redone_on_its_full_level(umbra_1024):
    """A 768 px coarse read seeds tiles from one 384 px level (``tiling.coarse_max_level``);
    when every tile fails (4 keypoints each: featureless), the coarse pass that becomes the
    result is redone on the plan's own levels, 1 and 0.71 (``coarse_top_k`` off: the level
    alone makes it rerun)."""
    from sarreg.config import InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    tiling = TilingConfig(top_k=4, coarse_top_k=None)
    res = register(
        ref, mov, None, RegisterConfig(input=InputConfig(coarse_size=768), tiling=tiling)
    )
    coarse = res.report["coarse"]
    assert coarse["refined_by_tiles"] is False and "featureless" in coarse["tiles_failed"]
    assert res.report["pyramid"]["coarse_before_tiles"] == pytest.approx([0.5])
    assert coarse["scales"] == pytest.approx([1.0, 2**-0.5])
    assert mapping_rmse(res.matrix, truth, shape) < 0.1  # measured 0.071 px


def test_when_every_tile_is_mostly_nodata_the_coarse_fit_is_the_result(umbra_1024, tmp_path):
    """The moving image of ``umbra_1024`` valid only on a central cross (two 256 px bands):
    the coarse pass registers it, and the 2 x 2 tiles of 256 px at the overlap's corners have
    no valid pixel in their moving windows (the read finds nothing: skipped as nodata, not an
    error); the coarse fit is the result, and the report names the nodata."""
    from sarreg.config import InputConfig, TilingConfig
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, truth, shape = umbra_1024
    with rasterio.open(mov) as ds:
        data, profile = ds.read(1).astype(np.float32), ds.profile
    keep = np.zeros(data.shape, bool)
    keep[384:640, :] = keep[:, 384:640] = True
    data[~keep] = -9999.0
    profile.update(dtype="float32", nodata=-9999.0)
    cross = tmp_path / "cross.tif"
    with rasterio.open(cross, "w", **profile) as ds:
        ds.write(data, 1)
    config = RegisterConfig(input=InputConfig(coarse_size=512),
                            tiling=TilingConfig(tiles=2, size=256))  # fmt: skip
    res = register(ref, cross, None, config)
    failed = res.report["coarse"]["tiles_failed"]
    assert not res.windowed and failed.startswith("every tile over the overlap of")
    assert "mostly nodata" in failed
    err = mapping_rmse(res.matrix, truth, shape)
    # measured 0.100 px (coarse precision), predicted 0.170
    assert err < 0.13
    assert err < res.predicted_error < 2 * err


@pytest.mark.parametrize(("coarse_size", "what"), [(512, "coarse matches"), (1024, "matches")])
def test_a_failed_coarse_fit_says_whether_tiles_would_have_followed(umbra_1024, coarse_size, what):
    """More inliers asked for than there are matches (no search): the fit of a coarse read
    that tiles would refine is refused naming the "coarse matches"; the fit of an image read
    whole, which is the registration itself, naming the matches."""
    import re

    from sarreg.config import EstimateConfig, InputConfig
    from sarreg.errors import TooFewMatchesError
    from sarreg.pipeline import RegisterConfig, register

    ref, mov, _, _ = umbra_1024
    config = RegisterConfig(input=InputConfig(coarse_size=coarse_size),
                            estimate=EstimateConfig(min_inliers=100_000, search=False))  # fmt: skip
    with pytest.raises(TooFewMatchesError) as exc:
        register(ref, mov, None, config)
    assert re.match(rf"only \d+ of \d+ {what} agree on a affine transform", exc.value.message)
