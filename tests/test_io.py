"""sarreg.io on the bundled real SAR samples (and real-data copies written to tmp_path)."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

import sarreg.io as sio
from sarreg.errors import BandError, ConfigError, EmptyImageError, InputFileError
from sarreg.io import detect_kind, raster_info, read_raster

OPERA = "opera_rtc_s1/OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_cropped.tif"  # noqa: E501
OPERA_TV = (
    "opera_rtc_s1/despeckled/"
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_tv_cropped.tif"
)
S1_DB = "s1_vv_grd_db.tif"
UMBRA = "umbra_mount_yasur.tif"


def _centre_map(transform, xy: np.ndarray) -> np.ndarray:
    """Map position of pixel centres (N, 2) under a rasterio affine (corner convention)."""
    xs, ys = transform @ (xy[:, 0] + 0.5, xy[:, 1] + 0.5)
    return np.stack([xs, ys], axis=1)


def _copy_with(src: Path, dst: Path, data: np.ndarray, **profile_updates) -> Path:
    """Write ``data`` (1 band) to ``dst`` with ``src``'s profile (updated)."""
    with rasterio.open(src) as ds:
        profile = ds.profile
    profile.update(profile_updates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(data, 1)
    return dst


# ------------------------------------------------------------------------------ kinds


@pytest.mark.parametrize(
    ("name", "kind"),
    [(OPERA, "power"), (OPERA_TV, "power"), (S1_DB, "db"), (UMBRA, "display")],
)
def test_kind_detected_on_real_files(data_dir: Path, name: str, kind: str) -> None:
    r = read_raster(data_dir / name, max_size=400)
    assert r.kind == kind


def test_kind_override_and_bad_kind(data_dir: Path) -> None:
    assert read_raster(data_dir / S1_DB, kind="amplitude").kind == "amplitude"
    with pytest.raises(ConfigError, match="unknown kind"):
        read_raster(data_dir / S1_DB, kind="sigma")


def test_detect_kind_rules_and_metadata(data_dir: Path) -> None:
    with rasterio.open(data_dir / OPERA) as ds:
        power = ds.read(1)
    power = power[np.isfinite(power)]
    assert detect_kind(power, "float32", {}) == "power"
    assert detect_kind(np.sqrt(power) * 300, "float32", {}) == "amplitude"
    assert detect_kind(10 * np.log10(power), "float32", {}) == "db"
    assert detect_kind((np.sqrt(power) * 1000).astype(np.uint16), "uint16", {}) == "amplitude"
    assert detect_kind(power.astype(np.complex64), "complex64", {"units": "dB"}) == "amplitude"
    # metadata wins over values
    assert detect_kind(power, "float32", {"units": "dB"}) == "db"
    assert detect_kind(power, "float32", {"description": "sigma0_VV_dB"}) == "db"
    assert detect_kind(power * 100, "float32", {"description": "gamma0 VH"}) == "power"
    assert detect_kind(power, "float32", {"band:quantity": "Amplitude"}) == "amplitude"
    # irrelevant TIFF tags and words merely containing "db" do not count
    tags = {"dataset:TIFFTAG_RESOLUTIONUNIT": "1 (unitless)", "description": "feedback"}
    assert detect_kind(power, "float32", tags) == "power"


# ------------------------------------------------------------------------------ nodata


def test_opera_nan_nodata_masked(data_dir: Path) -> None:
    r = read_raster(data_dir / OPERA)
    with rasterio.open(data_dir / OPERA) as ds:
        raw = ds.read(1)
    assert r.data.shape == r.mask.shape == (250, 350)
    assert r.data.dtype == np.float32 and r.mask.dtype == bool
    assert np.isnan(r.nodata)
    np.testing.assert_array_equal(r.mask, np.isfinite(raw))
    assert 0.30 < r.mask.mean() < 0.40
    assert np.all(r.data[~r.mask] == 0) and np.all(np.isfinite(r.data))
    np.testing.assert_array_equal(r.data[r.mask], raw[r.mask])


def test_db_file_minus99_nodata_masked(data_dir: Path, tmp_path: Path) -> None:
    r = read_raster(data_dir / S1_DB)
    assert r.nodata == -99.0 and r.dtype == "float32"
    assert r.mask.all() and r.data.min() > -99  # the sample itself has no nodata pixels
    data = r.data.copy()
    data[:30, :] = -99.0  # a nodata stripe on the real values
    data[100:110, 50:60] = -99.0
    path = _copy_with(data_dir / S1_DB, tmp_path / "s1_holes.tif", data)
    r2 = read_raster(path)
    assert r2.kind == "db"
    assert not r2.mask[:30].any() and not r2.mask[100:110, 50:60].any()
    assert r2.mask.sum() == data.size - 30 * 268 - 100
    assert np.all(r2.data[~r2.mask] == 0)
    np.testing.assert_array_equal(r2.data[r2.mask], data[r2.mask])


def test_all_nodata_window_is_empty_image_error(data_dir: Path) -> None:
    with pytest.raises(EmptyImageError, match="no valid pixels") as exc:
        read_raster(data_dir / OPERA, window=(0, 0, 100, 40))
    assert "--band" in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------------------ errors


def test_band_out_of_range(data_dir: Path) -> None:
    with pytest.raises(BandError, match=r"band 2 .* has 1 band") as exc:
        read_raster(data_dir / S1_DB, band=2)
    assert "--band between 1 and 1" in str(exc.value)
    with pytest.raises(BandError):
        raster_info(data_dir / S1_DB, band=0)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputFileError, match="not found") as exc:
        read_raster(missing)
    assert str(missing) in str(exc.value)
    with pytest.raises(InputFileError):
        raster_info(missing)
    with pytest.raises(InputFileError, match="folder"):
        read_raster(tmp_path)


def test_text_file_is_not_a_raster(tmp_path: Path) -> None:
    txt = tmp_path / "notes.tif"
    txt.write_text("this is not an image\n")
    with pytest.raises(InputFileError, match="cannot read") as exc:
        read_raster(txt)
    assert str(txt) in str(exc.value) and "GeoTIFF" in str(exc.value)


def test_bad_window_is_config_error(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="outside"):
        read_raster(data_dir / S1_DB, window=(1000, 0, 10, 10))
    with pytest.raises(ConfigError):
        read_raster(data_dir / S1_DB, window=(0, 0, 10))


# ------------------------------------------------------------------------------ geometry


def test_umbra_rotated_geotransform_and_crs(data_dir: Path) -> None:
    info = raster_info(data_dir / UMBRA)
    assert info.shape == (2000, 2000) and info.count == 1 and info.dtype == "uint8"
    assert info.crs == CRS.from_epsg(32759)
    assert info.georeferenced and info.georef_source == "geotransform"
    assert abs(info.transform.b) > 0.1 and abs(info.transform.d) > 0.1  # rotated
    corners = info.footprint_corners()
    assert corners.shape == (4, 2)
    np.testing.assert_allclose(corners[2], info.transform @ (2000, 2000))
    r = read_raster(data_dir / UMBRA, window=(0, 0, 64, 64))
    assert r.crs == CRS.from_epsg(32759)
    assert r.transform.almost_equals(info.transform)


def test_decimated_read_integer_factor(data_dir: Path) -> None:
    full = read_raster(data_dir / UMBRA, window=(0, 0, 800, 600))
    dec = read_raster(data_dir / UMBRA, window=(0, 0, 800, 600), max_size=200)
    assert dec.data.shape == (150, 200) and dec.decimation == 4.0
    assert dec.full_shape == (2000, 2000)
    for attr in "abde":
        assert getattr(dec.transform, attr) == pytest.approx(4 * getattr(full.transform, attr))
    blocks = full.data.reshape(150, 4, 200, 4).mean(axis=(1, 3))
    assert np.abs(dec.data - blocks).max() <= 0.5  # GDAL averages uint8 in uint8
    xy = np.array([[0.0, 0.0], [199.0, 149.0], [57.3, 101.6]])
    np.testing.assert_allclose(
        _centre_map(dec.transform, xy), _centre_map(full.transform, dec.to_full_res(xy)), atol=1e-6
    )
    np.testing.assert_allclose(dec.from_full_res(dec.to_full_res(xy)), xy)


def test_decimated_read_fractional_factor(data_dir: Path) -> None:
    full = read_raster(data_dir / OPERA)
    dec = read_raster(data_dir / OPERA, max_size=100)
    assert dec.decimation == pytest.approx(3.5)
    assert dec.data.shape == (71, 100)  # floor(250 / 3.5) rows: one factor for both axes
    assert dec.transform.a == pytest.approx(30.0 * 3.5) and dec.transform.e == pytest.approx(-105)
    xy = np.array([[0.0, 0.0], [99.0, 70.0], [40.2, 33.3]])
    np.testing.assert_allclose(
        _centre_map(dec.transform, xy), _centre_map(full.transform, dec.to_full_res(xy)), atol=1e-6
    )
    # nodata stays nodata: a decimated pixel is valid only where its block had valid pixels
    assert not dec.mask[:5, :20].any() and np.all(dec.data[~dec.mask] == 0)
    assert 0.30 < dec.mask.mean() < 0.45


def test_no_decimation_when_small_enough(data_dir: Path) -> None:
    r = read_raster(data_dir / S1_DB, max_size=268)
    assert r.decimation == 1.0 and r.data.shape == (217, 268)


def test_window_read_offset(data_dir: Path) -> None:
    full = read_raster(data_dir / S1_DB)
    win = read_raster(data_dir / S1_DB, window=Window(100, 50, 64, 32))
    assert win.data.shape == (32, 64) and win.window_offset == (100, 50)
    np.testing.assert_array_equal(win.data, full.data[50:82, 100:164])
    xy = np.array([[0.0, 0.0], [63.0, 31.0]])
    np.testing.assert_allclose(win.to_full_res(xy), xy + [100, 50])
    np.testing.assert_allclose(
        _centre_map(win.transform, xy), _centre_map(full.transform, xy + [100, 50])
    )
    # tuple form, clipped at the image edge, and combined with decimation
    edge = read_raster(data_dir / S1_DB, window=(200, 200, 100, 100))
    assert edge.data.shape == (17, 68) and edge.window_offset == (200, 200)
    both = read_raster(data_dir / UMBRA, window=(1000, 400, 400, 200), max_size=100)
    assert both.data.shape == (50, 100) and both.decimation == 4.0
    np.testing.assert_allclose(both.to_full_res(np.array([[0.0, 0.0]])), [[1001.5, 401.5]])


def test_overviews_used_and_reported(data_dir: Path, tmp_path: Path) -> None:
    full = read_raster(data_dir / UMBRA, window=(0, 0, 512, 512))
    path = _copy_with(
        data_dir / UMBRA, tmp_path / "ovr.tif", full.data.astype(np.uint8), width=512, height=512
    )
    assert raster_info(path).has_overviews is False
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
    assert raster_info(path).has_overviews is True
    dec = read_raster(path, max_size=128)
    assert dec.data.shape == (128, 128) and dec.decimation == 4.0
    blocks = full.data.reshape(128, 4, 128, 4).mean(axis=(1, 3))
    assert np.abs(dec.data - blocks).mean() < 1.0


def test_png_is_not_georeferenced(data_dir: Path, tmp_path: Path) -> None:
    crop = read_raster(data_dir / UMBRA, window=(500, 500, 120, 80)).data.astype(np.uint8)
    png = tmp_path / "crop.png"
    assert cv2.imwrite(str(png), crop)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        r = read_raster(png)
        info = raster_info(png)
    assert r.transform is None and r.crs is None and not r.georeferenced
    assert info.transform is None and info.footprint_corners() is None
    assert r.kind == "display" and r.dtype == "uint8"
    np.testing.assert_array_equal(r.data, crop)
    dec = read_raster(png, max_size=60)
    assert dec.transform is None and dec.data.shape == (40, 60)


def test_gcps_give_fitted_transform(data_dir: Path, tmp_path: Path) -> None:
    r = read_raster(data_dir / S1_DB)
    path = _copy_with(data_dir / S1_DB, tmp_path / "gcp.tif", r.data, transform=None, crs=None)
    t = r.transform
    gcps = [
        GroundControlPoint(row=row, col=col, x=(t @ (col, row))[0], y=(t @ (col, row))[1])
        for row, col in [(0, 0), (0, 268), (217, 0), (217, 268), (100, 130)]
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "r+") as ds:
            ds.gcps = (gcps, r.crs)
    g = read_raster(path)
    assert g.georef_source == "gcps" and g.crs == r.crs
    assert g.transform.almost_equals(t, precision=1e-6)


# ------------------------------------------------------------------------------ complex


def _complex_copy(data_dir: Path, tmp_path: Path) -> tuple[Path, np.ndarray]:
    with rasterio.open(data_dir / OPERA) as ds:
        power = ds.read(1)
    amp = np.sqrt(np.nan_to_num(power, nan=0.0)).astype(np.float32)
    phase = np.random.default_rng(0).uniform(0, 2 * np.pi, amp.shape)
    slc = (amp * np.exp(1j * phase)).astype(np.complex64)
    path = _copy_with(data_dir / OPERA, tmp_path / "slc.tif", slc, dtype="complex64", nodata=None)
    return path, amp


def test_complex_slc_read_as_amplitude(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, amp = _complex_copy(data_dir, tmp_path)
    r = read_raster(path)
    assert r.kind == "amplitude" and r.dtype == "complex64"
    np.testing.assert_allclose(r.data, amp, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(r.mask, amp > 0)  # zero-filled SLC pixels are no data
    dec = read_raster(path, max_size=175)
    assert dec.data.shape == (125, 175) and dec.decimation == 2.0
    valid = (amp > 0).reshape(125, 2, 175, 2).sum(axis=(1, 3))
    sums = amp.reshape(125, 2, 175, 2).sum(axis=(1, 3))
    expected = np.where(valid > 0, sums / np.maximum(valid, 1), 0)  # mean amplitude, not |mean z|
    np.testing.assert_allclose(dec.data, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(dec.mask, valid > 0)
    # strip-wise processing gives the same numbers (fractional factor too)
    ref = read_raster(path, max_size=100, window=(3, 5, 340, 240))
    monkeypatch.setattr(sio, "_STRIP_PIXELS", 2000)
    strips = read_raster(path, max_size=100, window=(3, 5, 340, 240))
    np.testing.assert_allclose(strips.data, ref.data, rtol=1e-5, atol=1e-7)
