"""sarreg.preprocess on the bundled real SAR samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sarreg.errors import ConfigError, EmptyImageError
from sarreg.io import read_raster
from sarreg.preprocess import (
    PreprocessConfig,
    keypoint_mask,
    preprocess,
    preprocess_raster,
    robust_range,
    small_holes,
    to_db,
)

OPERA = (
    "opera_rtc_s1/"
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_cropped.tif"
)
S1_DB = "s1_vv_grd_db.tif"
UMBRA = "umbra_mount_yasur.tif"


@pytest.fixture(scope="module")
def opera(data_dir: Path):
    return read_raster(data_dir / OPERA)


def test_output_range_dtype_and_fill(opera) -> None:
    image, kp = preprocess_raster(opera)
    assert image.shape == kp.shape == opera.data.shape
    assert image.dtype == np.float32 and kp.dtype == bool
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    # 1..99 % scaling: about 1 % of valid pixels saturate at each end
    valid = image[opera.mask]
    assert 0.005 < np.mean(valid == 0.0) < 0.02 and 0.005 < np.mean(valid == 1.0) < 0.02
    # nodata filled with the mean of the valid scaled values: no strong edge at the border
    # (small holes inside the data get the mean of their neighbours instead)
    fill = image[~opera.mask & ~small_holes(opera.mask, PreprocessConfig().mask_margin)]
    assert np.ptp(fill) == 0.0
    assert fill[0] == pytest.approx(valid.mean(), abs=1e-6)


def test_power_is_log_compressed(opera) -> None:
    image, _ = preprocess_raster(opera)
    db = 10 * np.log10(opera.data[opera.mask].astype(np.float64))
    lo, hi = np.percentile(db, [1, 99])
    expected = np.clip((db - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image[opera.mask], expected, atol=1e-4)
    # without log compression the heavy tail pushes most pixels towards 0
    linear, _ = preprocess_raster(opera, PreprocessConfig(log=False))
    assert np.median(linear[opera.mask]) < np.median(image[opera.mask]) - 0.1


def test_amplitude_and_power_give_the_same_image(opera) -> None:
    amp = np.sqrt(opera.data)
    img_p, kp_p = preprocess(opera.data, opera.mask, "power")
    img_a, kp_a = preprocess(amp, opera.mask, "amplitude")
    np.testing.assert_allclose(img_a, img_p, atol=1e-4)
    np.testing.assert_array_equal(kp_a, kp_p)


def test_to_db_floor_avoids_inf(opera) -> None:
    data = opera.data.copy()
    data[opera.mask & (np.arange(data.size).reshape(data.shape) % 97 == 0)] = 0.0
    db = to_db(data, "power", opera.mask)
    assert np.isfinite(db).all()
    positive = opera.mask & (data > 0)
    assert db[opera.mask].min() >= db[positive].min() - 1e-3  # zeros -> darkest real signal
    assert db[opera.mask].min() > -60
    np.testing.assert_array_equal(to_db(data, "db"), data)  # db/display unchanged


def test_db_and_display_not_log_compressed(data_dir: Path) -> None:
    for name, kind in [(S1_DB, "db"), (UMBRA, "display")]:
        r = read_raster(data_dir / name, window=(0, 0, 200, 200))
        assert r.kind == kind
        image, _ = preprocess_raster(r)
        lo, hi = np.percentile(r.data[r.mask], [1, 99])
        expected = np.clip((r.data - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(image, expected, atol=1e-5)


def test_keypoint_mask_keeps_away_from_nodata(opera) -> None:
    for margin in (0, 1, 4, 7):
        _, kp = preprocess_raster(opera, PreprocessConfig(mask_margin=margin))
        assert not kp[~opera.mask].any()
        # chessboard distance of each valid pixel to the nearest nodata region; small holes
        # (scattered invalid pixels) are only left out themselves
        base = opera.mask | small_holes(opera.mask, margin)
        dist = ndimage.distance_transform_cdt(base, metric="chessboard")
        np.testing.assert_array_equal(kp, (dist > margin) & opera.mask)
    assert 0.5 * opera.mask.sum() < kp.sum() < opera.mask.sum()


def test_keypoint_mask_ignores_image_border() -> None:
    mask = np.ones((20, 30), bool)
    mask[10, 15] = False
    kp = keypoint_mask(mask, 2)
    assert kp[0, 0] and kp[-1, -1]  # the image edge is not nodata
    assert not kp[8:13, 13:18].any() and kp[7, 15] and kp[10, 12]


def test_nan_inside_mask_is_treated_invalid(opera) -> None:
    data = opera.data.copy()
    mask = opera.mask.copy()
    r, c = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    data[r, c] = np.nan
    image, kp = preprocess(data, mask, "power")
    assert np.isfinite(image).all() and not kp[r, c]


def test_outliers_do_not_change_scaling(data_dir: Path) -> None:
    r = read_raster(data_dir / S1_DB)
    base, _ = preprocess_raster(r)
    spiky = r.data.copy()
    idx = np.random.default_rng(0).choice(spiky.size, spiky.size // 300, replace=False)
    spiky.flat[idx] = 40.0  # 0.3 % bright point targets
    image, _ = preprocess(spiky, r.mask, "db")
    keep = np.ones(spiky.size, bool)
    keep[idx] = False
    assert np.abs(image.ravel()[keep] - base.ravel()[keep]).max() < 0.03


def test_percentile_subsample_is_deterministic(data_dir: Path) -> None:
    r = read_raster(data_dir / UMBRA)
    cfg = PreprocessConfig(max_samples=20_000)
    a = robust_range(r.data, r.mask, cfg)
    b = robust_range(r.data, r.mask, cfg)
    assert a == b
    full = np.percentile(r.data, [1, 99])
    np.testing.assert_allclose(a, full, atol=2.0)


def test_constant_image_error(opera) -> None:
    const = np.full_like(opera.data, float(np.median(opera.data[opera.mask])))
    with pytest.raises(EmptyImageError, match="no contrast") as exc:
        preprocess(const, opera.mask, "power")
    msg = str(exc.value)
    assert "constant" in msg and "choose another image" in msg and "\n" not in msg
    with pytest.raises(EmptyImageError, match="no valid pixels"):
        preprocess(opera.data, np.zeros_like(opera.mask), "power")


def test_bad_inputs(opera) -> None:
    with pytest.raises(ConfigError, match="kind"):
        preprocess(opera.data, opera.mask, "sigma0")
    with pytest.raises(ConfigError, match="same shape"):
        preprocess(opera.data, opera.mask[:-1], "power")


def test_config_round_trip_and_errors() -> None:
    cfg = PreprocessConfig(log=False, low_percentile=2.0, high_percentile=98.5, mask_margin=6)
    d = cfg.to_dict()
    assert d["mask_margin"] == 6 and d["log"] is False
    assert PreprocessConfig.from_dict(d) == cfg
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    assert PreprocessConfig.from_dict({"mask_margin": 3.0, "log": "true"}).mask_margin == 3
    with pytest.raises(ConfigError, match="unknown preprocess setting") as exc:
        PreprocessConfig.from_dict({**d, "gamma": 2})
    assert "gamma" in str(exc.value) and "low_percentile" in str(exc.value)
    with pytest.raises(ConfigError, match="percentiles"):
        PreprocessConfig(low_percentile=99, high_percentile=1)
    with pytest.raises(ConfigError, match="mask_margin"):
        PreprocessConfig.from_dict({"mask_margin": 2.5})
    with pytest.raises(ConfigError):
        PreprocessConfig.from_dict({"log": "maybe"})
    with pytest.raises(AttributeError):
        cfg.log = True  # frozen


def test_scattered_invalid_pixels_do_not_empty_the_keypoint_mask(opera) -> None:
    """12 % of scattered NaN/inf pixels: masked themselves, but the keypoint area stays."""
    rng = np.random.default_rng(3)
    data = opera.data.copy()
    bad = (rng.random(data.shape) < 0.12) & opera.mask
    data[bad] = np.where(rng.random(int(bad.sum())) < 0.5, np.inf, np.nan)
    image, kp = preprocess(data, opera.mask, opera.kind)
    _, kp_clean = preprocess(opera.data, opera.mask, opera.kind)
    assert not kp[bad].any()
    assert kp.sum() > 0.8 * (kp_clean & ~bad).sum()
    assert np.isfinite(image).all()
    # a hole takes its neighbours' level, not the global mean
    clean, _ = preprocess(opera.data, opera.mask, opera.kind)
    err = np.abs(image[bad] - clean[bad]).mean()
    assert err < np.abs(clean[bad] - clean[opera.mask].mean()).mean()


def test_no_contrast_message_names_the_image() -> None:
    with pytest.raises(EmptyImageError, match="the moving image a.tif has no contrast"):
        preprocess(np.ones((20, 20), np.float32), np.ones((20, 20), bool), "db",
                   name="the moving image a.tif")  # fmt: skip
