"""Resampling onto the reference grid and re-georeferencing, on the bundled real SAR samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from sarreg.errors import (
    BandError,
    ConfigError,
    DegenerateTransformError,
    InputFileError,
    NotGeoreferencedError,
    OutputExistsError,
)
from sarreg.warp import REGISTRATION_TAG, GridSpec, grid_of, resample_to_grid, write_georeferenced

UMBRA_WINDOW = Window(700, 700, 320, 320)


def _rot(deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def opera(data_dir):
    """First OPERA RTC VH date: float32 power, NaN nodata, ~35 % valid, north-up 30 m."""
    return sorted((data_dir / "opera_rtc_s1").glob("*VH_cropped.tif"))[0]


@pytest.fixture(scope="module")
def umbra_crop(data_dir, tmp_path_factory):
    """320x320 crop of the Umbra uint8 image (no nodata), keeping its ROTATED geotransform."""
    out = tmp_path_factory.mktemp("umbra") / "umbra_crop.tif"
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as src:
        arr = src.read(1, window=UMBRA_WINDOW)
        profile = src.profile
        profile.update(
            width=arr.shape[1], height=arr.shape[0], transform=src.window_transform(UMBRA_WINDOW)
        )
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(arr, 1)
    return out


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds.tags()


# ---------------------------------------------------------------------------- resample


@pytest.mark.parametrize("resampling", ["bilinear", "nearest"])
def test_identity_on_own_grid_keeps_values_and_nan(opera, tmp_path, resampling):
    src, sprof, _ = _read(opera)
    res = resample_to_grid(opera, 1, np.eye(3), grid_of(opera), tmp_path / "id.tif", resampling)
    out, prof, tags = _read(res.path)
    assert prof["dtype"] == "float32" and math.isnan(prof["nodata"])
    assert prof["crs"] == sprof["crs"] and prof["transform"] == sprof["transform"]
    assert (prof["width"], prof["height"]) == (sprof["width"], sprof["height"])
    assert prof["tiled"] and prof["blockxsize"] == 256 and prof["compress"] == "deflate"
    np.testing.assert_array_equal(np.isnan(out), np.isnan(src))
    valid = ~np.isnan(src)
    np.testing.assert_allclose(out[valid], src[valid], rtol=1e-5, atol=0)
    assert res.valid_fraction == pytest.approx(valid.mean())
    info = json.loads(tags[REGISTRATION_TAG])
    assert info["mode"] == "resample" and info["matrix"] == np.eye(3).tolist()


def test_fractional_shift_does_not_smear_nodata(opera, tmp_path):
    """Bilinear: valid exactly where all 2x2 taps are valid; cubic: where all 4x4 taps are."""
    src, _, _ = _read(opera)
    h, w = src.shape
    valid = np.isfinite(src)
    m = np.array([[1.0, 0, 0.5], [0, 1.0, 0.25], [0, 0, 1.0]])  # x_mov = x_ref - 0.5, ...
    out = _read(resample_to_grid(opera, 1, m, grid_of(opera), tmp_path / "b.tif").path)[0]

    pad = np.zeros((h + 4, w + 4), bool)  # outside the image counts as invalid
    pad[2:-2, 2:-2] = valid
    taps2 = [pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (0, 1) for dx in (0, 1)]
    expect_valid = np.logical_and.reduce(taps2)  # taps (x-1, x) and (y-1, y)
    np.testing.assert_array_equal(np.isfinite(out), expect_valid)
    assert 0.2 < expect_valid.mean() < valid.mean()

    s = np.pad(np.nan_to_num(src), 1)
    expect = (
        0.5 * 0.25 * s[0:h, 0:w] + 0.5 * 0.25 * s[0:h, 1 : w + 1]
        + 0.5 * 0.75 * s[1 : h + 1, 0:w] + 0.5 * 0.75 * s[1 : h + 1, 1 : w + 1]
    )  # fmt: skip
    np.testing.assert_allclose(out[expect_valid], expect[expect_valid], rtol=1e-4)

    cub = _read(resample_to_grid(opera, 1, m, grid_of(opera), tmp_path / "c.tif", "cubic").path)[0]
    taps4 = [pad[dy : dy + h, dx : dx + w] for dy in range(4) for dx in range(4)]
    np.testing.assert_array_equal(np.isfinite(cub), np.logical_and.reduce(taps4))


def test_integer_translation_shifts_exactly(umbra_crop, tmp_path):
    src, _, _ = _read(umbra_crop)
    m = np.array([[1.0, 0, 5], [0, 1.0, -3], [0, 0, 1.0]])  # x_ref = x_mov + 5, y_ref = y_mov - 3
    for resampling in ("nearest", "bilinear", "cubic"):
        out_path = tmp_path / f"{resampling}.tif"
        res = resample_to_grid(umbra_crop, 1, m, grid_of(umbra_crop), out_path, resampling)
        out, prof, _ = _read(res.path)
        assert prof["dtype"] == "uint8" and prof["nodata"] is None
        np.testing.assert_array_equal(out[:-3, 5:], src[3:, :-5], err_msg=resampling)
        assert not out[:, :5].any() and not out[-3:, :].any()  # outside the moving image
        with rasterio.open(res.path) as ds:  # validity in the internal mask band
            valid = ds.read_masks(1) > 0
            assert ds.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        assert not valid[:, :5].any() and not valid[-3:, :].any()
        assert valid[:-3, 5:].all()  # real zeros of the image stay valid
        assert (out[:-3, 5:] == 0).any()


def test_affine_then_inverse_recovers_umbra(umbra_crop, tmp_path):
    src, _, _ = _read(umbra_crop)
    grid = grid_of(umbra_crop)
    a = _rot(7.0, 1.05, 12.3, -20.7)
    resample_to_grid(umbra_crop, 1, a, grid, tmp_path / "fwd.tif")
    res = resample_to_grid(tmp_path / "fwd.tif", 1, np.linalg.inv(a), grid, tmp_path / "b.tif")
    back = _read(res.path)[0]
    core = (slice(60, 260), slice(60, 260))  # away from the borders the warp leaves empty
    x, y = src[core].astype(float), back[core].astype(float)
    with rasterio.open(res.path) as ds:
        ok = ds.read_masks(1)[core] > 0  # uint8 without nodata: validity in the mask band
    assert ok.mean() > 0.85
    err = np.abs(x - y)[ok].mean()
    one_px = np.abs(src[61:261, 60:260].astype(float) - x).mean()  # a 1-pixel misregistration
    assert err < 0.5 * one_px
    assert np.corrcoef(x[ok], y[ok])[0, 1] > 0.93


def test_output_matches_rotated_reference_grid(umbra_crop, data_dir, tmp_path):
    """Moving S1 dB image (nodata -99) onto the Umbra crop's rotated grid: grid, dtype, nodata."""
    grid = grid_of(umbra_crop)
    assert grid.transform.b != 0  # really rotated
    moving = data_dir / "s1_vv_grd_db.tif"
    m = _rot(-20.0, 0.6, 40.0, 25.0)
    res = resample_to_grid(moving, 1, m, grid, tmp_path / "s1_on_umbra.tif", "cubic")
    out, prof, _ = _read(res.path)
    assert prof["crs"] == grid.crs and prof["transform"] == grid.transform
    assert (prof["width"], prof["height"]) == (grid.width, grid.height)
    assert prof["dtype"] == "float32" and prof["nodata"] == -99
    mov = _read(moving)[0]
    good = out != -99
    assert 0.1 < good.mean() < 0.5 and not np.isnan(out).any()
    assert mov[mov != -99].min() - 1 < out[good].min() and out[good].max() < mov.max() + 1
    # spot-check one pixel against the direct nearest-neighbour lookup
    near = _read(resample_to_grid(moving, 1, m, grid, tmp_path / "nn.tif", "nearest").path)[0]
    inv = np.linalg.inv(m)
    checked = 0
    for yr in range(3, 320, 11):
        for xr in range(3, 320, 13):
            xm, ym, _ = inv @ [xr, yr, 1.0]
            xi, yi = math.floor(xm + 0.5), math.floor(ym + 0.5)
            inside = 0 <= xi < mov.shape[1] and 0 <= yi < mov.shape[0]
            assert near[yr, xr] == (mov[yi, xi] if inside else -99)
            checked += inside and mov[yi, xi] != -99
    assert checked > 50


def test_blocks_give_identical_result(umbra_crop, tmp_path):
    m = _rot(25.0, 0.9, 30.0, -10.0)
    g = grid_of(umbra_crop)
    one = _read(resample_to_grid(umbra_crop, 1, m, g, tmp_path / "one.tif", "cubic").path)[0]
    many = resample_to_grid(umbra_crop, 1, m, g, tmp_path / "many.tif", "cubic", block_rows=1)
    np.testing.assert_array_equal(_read(many.path)[0], one)  # 256x256 blocks: 4 of them


@pytest.mark.parametrize("workers", [2, 3])
def test_threads_give_the_result_of_one(data_dir, tmp_path, monkeypatch, workers):
    """Blocks computed on threads (each with its own moving dataset, all closed after) are
    written in order: the same pixels and mask as on the calling thread alone."""
    import sarreg.warp as warp

    src = data_dir / "umbra_mount_yasur.tif"  # 2000 x 2000 uint8: a mask band, 64 blocks
    m = _rot(17.0, 1.1, -120.0, 240.0)
    g = grid_of(src)
    opened = []
    real_open = warp._open

    def recording_open(path):
        ds = real_open(path)
        opened.append(ds)
        return ds

    monkeypatch.setattr(warp, "_open", recording_open)
    one = resample_to_grid(src, 1, m, g, tmp_path / "one.tif", block_rows=256, workers=1)
    assert len(opened) == 1
    many = resample_to_grid(src, 1, m, g, tmp_path / "many.tif", block_rows=256, workers=workers)
    assert 2 <= len(opened) <= 2 + workers  # the caller's dataset and one per thread
    assert all(ds.closed for ds in opened)
    with rasterio.open(one.path) as a, rasterio.open(many.path) as b:
        np.testing.assert_array_equal(b.read(1), a.read(1))
        np.testing.assert_array_equal(b.read_masks(1), a.read_masks(1))
        assert 0.3 < (a.read_masks(1) > 0).mean() < 0.95
    assert many.valid_fraction == one.valid_fraction


def test_in_order_keeps_the_order_bounds_the_work_in_flight_and_raises():
    import threading
    import time

    from sarreg.warp import _in_order

    lock, state = threading.Lock(), {"running": 0, "most": 0, "started": 0}

    def slow(i):
        with lock:
            state["started"] += 1
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        with lock:
            state["running"] -= 1
        if i == 13:
            raise ValueError("block 13")
        return i * i

    got = []
    with pytest.raises(ValueError, match="block 13"):
        for v in _in_order(slow, range(40), 3):
            got.append(v)
    assert got == [i * i for i in range(13)]
    assert state["most"] <= 3
    assert state["started"] <= 13 + 1 + 2 * 3  # nothing is started far ahead of the writer
    assert list(_in_order(lambda i: -i, range(5), 1)) == [0, -1, -2, -3, -4]
    assert list(_in_order(lambda i: -i, [], 4)) == []


def test_oversized_windows_are_split(umbra_crop, tmp_path, monkeypatch):
    """Blocks whose moving window exceeds the memory cap are split; the result is unchanged."""
    import sarreg.warp as warp

    m = _rot(-30.0, 0.5, 150.0, 60.0)  # zoom out: each block needs a large moving window
    g = grid_of(umbra_crop)
    whole = _read(resample_to_grid(umbra_crop, 1, m, g, tmp_path / "whole.tif", "cubic").path)[0]
    monkeypatch.setattr(warp, "_MAX_WINDOW_PIXELS", 2000)
    split = resample_to_grid(umbra_crop, 1, m, g, tmp_path / "split.tif", "cubic")
    np.testing.assert_array_equal(_read(split.path)[0], whole)
    assert 0.1 < split.valid_fraction < 0.9


def test_homography(opera, tmp_path):
    m = np.array([[1.02, 0.03, -4.0], [-0.02, 0.98, 6.0], [2e-4, -1e-4, 1.0]])
    src = _read(opera)[0]
    out = _read(resample_to_grid(opera, 1, m, grid_of(opera), tmp_path / "h.tif", "nearest").path)[
        0
    ]
    inv = np.linalg.inv(m)
    checked = 0
    for yr in range(5, 245, 17):
        for xr in range(5, 345, 23):
            xm, ym, wm = inv @ [xr, yr, 1.0]
            xm, ym = xm / wm, ym / wm
            xi, yi = math.floor(xm + 0.5), math.floor(ym + 0.5)
            inside = 0 <= xi < src.shape[1] and 0 <= yi < src.shape[0]
            v = src[yi, xi] if inside else np.nan
            if np.isnan(v):
                assert np.isnan(out[yr, xr])
            else:
                assert out[yr, xr] == v
                checked += 1
    assert checked > 30


def test_complex_becomes_float32_amplitude(opera, tmp_path):
    power, prof, _ = _read(opera)
    amp = np.sqrt(power)
    cplx = (amp * np.exp(1j * np.linspace(0, 6, amp.size).reshape(amp.shape))).astype(np.complex64)
    prof.update(dtype="complex64", nodata=None, compress="deflate", predictor=1)
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(cplx, 1)
    out, oprof, _ = _read(
        resample_to_grid(path, 1, np.eye(3), grid_of(opera), tmp_path / "a.tif").path
    )
    assert oprof["dtype"] == "float32" and math.isnan(oprof["nodata"])
    np.testing.assert_array_equal(np.isnan(out), np.isnan(amp))
    np.testing.assert_allclose(out[np.isfinite(amp)], amp[np.isfinite(amp)], rtol=1e-5)


def test_existing_output_and_overwrite(opera, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"not a tiff")
    with pytest.raises(OutputExistsError):
        resample_to_grid(opera, 1, np.eye(3), grid_of(opera), out)
    assert out.read_bytes() == b"not a tiff"
    resample_to_grid(opera, 1, np.eye(3), grid_of(opera), out, overwrite=True)
    assert _read(out)[1]["width"] == 350
    assert [p.name for p in tmp_path.iterdir()] == ["o.tif"]


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_midway_leaves_nothing(opera, tmp_path, workers):
    """A truncated moving file opens but fails on read: InputFileError, no output, no temp
    (also when the failing read is on a thread)."""
    broken = tmp_path / "in" / "truncated.tif"
    broken.parent.mkdir()
    data = opera.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputFileError, match="cannot read"):
        resample_to_grid(  # two 256-px blocks: with 2 workers, each read on a thread
            broken, 1, np.eye(3), grid_of(opera), out_dir / "o.tif", block_rows=1,
            workers=workers,
        )  # fmt: skip
    with pytest.raises(InputFileError, match="cannot read"):
        write_georeferenced(broken, 1, out_dir / "g.tif", transform=Affine.identity())
    assert list(out_dir.iterdir()) == []


def test_bad_inputs_fail_before_writing(opera, tmp_path):
    g = grid_of(opera)
    with pytest.raises(DegenerateTransformError):
        resample_to_grid(opera, 1, np.zeros((3, 3)), g, tmp_path / "a.tif")
    with pytest.raises(DegenerateTransformError):
        resample_to_grid(opera, 1, np.eye(2), g, tmp_path / "a.tif")
    with pytest.raises(BandError, match="band 2"):
        resample_to_grid(opera, 2, np.eye(3), g, tmp_path / "a.tif")
    with pytest.raises(ConfigError, match="resampling"):
        resample_to_grid(opera, 1, np.eye(3), g, tmp_path / "a.tif", "lanczos9")
    with pytest.raises(ConfigError, match="nodata"):
        resample_to_grid(opera, 1, np.eye(3), g, tmp_path / "a.tif", nodata=1e40)
    with pytest.raises(InputFileError, match="does not exist"):
        grid_of(tmp_path / "missing.tif")
    with pytest.raises(ValueError):
        GridSpec(g.crs, g.transform, 0, 10)
    assert list(tmp_path.iterdir()) == []


def test_nodata_override(umbra_crop, tmp_path):
    src = _read(umbra_crop)[0]
    g = grid_of(umbra_crop)
    res = resample_to_grid(umbra_crop, 1, np.eye(3), g, tmp_path / "o.tif", "nearest", nodata=255)
    out, prof, _ = _read(res.path)
    assert prof["nodata"] == 255
    np.testing.assert_array_equal(out, src)  # zeros stay data


# ---------------------------------------------------------------------------- georef


def test_georef_transform(data_dir, tmp_path):
    src_path = data_dir / "s1_vv_grd_db.tif"
    src, sprof, _ = _read(src_path)
    new = Affine(20.0, 0.0, 620048.241204 + 13.5, 0.0, -20.0, 4830114.70107 - 7.25)
    res = write_georeferenced(src_path, 1, tmp_path / "g.tif", transform=new)
    out, prof, tags = _read(res.path)
    assert prof["transform"] == new and prof["crs"] == sprof["crs"]
    assert prof["dtype"] == "float32" and prof["nodata"] == -99
    assert prof["tiled"] and prof["compress"] == "deflate"
    np.testing.assert_array_equal(out, src)
    info = json.loads(tags[REGISTRATION_TAG])
    assert info["mode"] == "georef" and info["transform"] == list(new)[:6]


def test_georef_gcps(umbra_crop, tmp_path):
    src, _, _ = _read(umbra_crop)
    crs = CRS.from_epsg(32759)
    gcps = [(0.0, 0.0, 337000.0, 7840000.0), (319.0, 0.0, 337180.0, 7839950.0),
            (319.0, 319.0, 337130.0, 7839770.0), (0.0, 319.0, 336950.0, 7839820.0),
            (160.5, 120.25, 337071.5, 7839905.5)]  # fmt: skip
    res = write_georeferenced(umbra_crop, 1, tmp_path / "gcp.tif", crs=crs, gcps=gcps)
    with rasterio.open(res.path) as ds:
        got, got_crs = ds.gcps
        np.testing.assert_array_equal(ds.read(1), src)
        assert ds.dtypes[0] == "uint8" and ds.nodata is None
    assert got_crs == crs and len(got) == len(gcps)
    for g, (x, y, gx, gy) in zip(got, gcps, strict=True):
        assert (g.col, g.row) == (x + 0.5, y + 0.5)  # GDAL pixel/line are corner-based
        assert (g.x, g.y) == (gx, gy)


def test_georef_argument_errors(opera, tmp_path):
    with pytest.raises(ConfigError):
        write_georeferenced(opera, 1, tmp_path / "a.tif")
    with pytest.raises(ConfigError):
        write_georeferenced(
            opera, 1, tmp_path / "a.tif", Affine.identity(), gcps=[(0, 0, 0, 0)] * 4
        )
    with pytest.raises(ConfigError, match="GCPs"):
        write_georeferenced(opera, 1, tmp_path / "a.tif", gcps=[(0, 0, 1, 1)] * 2)
    arr, prof, _ = _read(opera)
    bare = tmp_path / "bare.tif"
    prof.update(crs=None, transform=Affine.identity())
    with rasterio.open(bare, "w", **prof) as dst:
        dst.write(arr, 1)
    with pytest.raises(NotGeoreferencedError):
        write_georeferenced(bare, 1, tmp_path / "a.tif", transform=Affine.translation(1, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.tif"]
