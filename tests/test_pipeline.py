"""End-to-end registration on real SAR samples with the bundled model, and every bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from sarreg.cli import main
from sarreg.config import EstimateConfig, OutputConfig
from sarreg.errors import DegenerateTransformError
from sarreg.geometry import mapping_rmse, pixel_to_map, similarity_about_centre
from sarreg.pipeline import RegisterConfig, register

OPERA = "opera_rtc_s1"
DATE1 = (
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240123T084748Z_20240123T162136Z_S1A_30_v1.0_VH_cropped.tif"
)
DATE3 = (
    "OPERA_L2_RTC-S1_T009-019294-IW2_20240216T084747Z_20240216T160042Z_S1A_30_v1.0_VH_cropped.tif"
)


def affine_about_centre(shape, deg, scale, shift) -> np.ndarray:
    """Rotation/scale about the image centre, then a shift (pixel centres), 3x3."""
    return similarity_about_centre(shape, deg, scale, shift)


def grid_error(m_est: np.ndarray, m_true: np.ndarray, shape) -> float:
    """RMSE in pixels between two 3x3 mappings over a grid of moving pixel centres."""
    return mapping_rmse(m_est, m_true, shape)


def write_like(path: Path, src_profile: dict, data: np.ndarray, transform=None, crs=None, **kw):
    profile = dict(src_profile)
    profile.update(width=data.shape[1], height=data.shape[0], count=1, dtype=str(data.dtype), **kw)
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    profile["tiled"] = False
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


@pytest.fixture(scope="module")
def umbra_pair(tmp_path_factory, data_dir):
    """A 512 x 512 Umbra crop (rotated geotransform) and the same area warped by a known affine.

    The moving file carries the reference crop's geotransform, so its georeferencing is wrong
    by exactly the known warp. Returns (ref_path, mov_path, true matrix mov->ref, shape).
    """
    tmp = tmp_path_factory.mktemp("umbra")
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        win = Window(700, 700, 512, 512)
        ref = ds.read(1, window=win)
        t = ds.window_transform(win)
        profile = ds.profile
    w = affine_about_centre(ref.shape, deg=4.0, scale=1.05, shift=(9.3, -6.2))
    # moving pixel x' shows reference pixel W^-1 x'
    mov = cv2.warpAffine(ref, w[:2], (512, 512), flags=cv2.INTER_LINEAR)
    ref_path = write_like(tmp / "ref.tif", profile, ref, transform=t)
    mov_path = write_like(tmp / "mov.tif", profile, mov, transform=t)
    return ref_path, mov_path, np.linalg.inv(w), ref.shape


@pytest.fixture(scope="module")
def opera_pair(tmp_path_factory, data_dir):
    """A real 24-day OPERA RTC-S1 pair (identity truth), date 2 warped by a known affine."""
    tmp = tmp_path_factory.mktemp("opera")
    with rasterio.open(data_dir / OPERA / DATE1) as ds:
        profile = ds.profile
    with rasterio.open(data_dir / OPERA / DATE3) as ds:
        src = ds.read(1)
    w = affine_about_centre(src.shape, deg=-3.0, scale=0.97, shift=(-5.5, 4.25))
    valid = np.isfinite(src)
    size = (src.shape[1], src.shape[0])
    warped = cv2.warpAffine(np.where(valid, src, 0), w[:2], size, flags=cv2.INTER_LINEAR)
    vmask = cv2.warpAffine(valid.astype(np.float32), w[:2], size, flags=cv2.INTER_LINEAR)
    mov = np.where(vmask > 0.999, warped, np.nan).astype(np.float32)
    mov_path = write_like(tmp / "mov.tif", profile, mov)
    return data_dir / OPERA / DATE1, mov_path, np.linalg.inv(w), src.shape


def test_umbra_known_affine_subpixel_and_output_grid(umbra_pair, tmp_path):
    ref_path, mov_path, m_true, shape = umbra_pair
    out = tmp_path / "aligned.tif"
    res = register(
        ref_path, mov_path, out, RegisterConfig(output=OutputConfig(plot=str(tmp_path / "m.png")))
    )
    err = grid_error(res.matrix, m_true, shape)
    assert err < 0.3, f"registration error {err:.3f} px"  # measured 0.174
    # the report's predicted error is honest: within 2x of the true error (measured 0.298)
    assert err / 2 < res.report["error_estimate"]["rms_px"] < 2 * err
    assert res.n_inliers >= 50
    # output lies on the reference grid: CRS, rotated transform, size, dtype
    with rasterio.open(ref_path) as r, rasterio.open(out) as o:
        assert o.crs == r.crs
        assert o.transform.almost_equals(r.transform)
        assert abs(o.transform.b) > 0.1  # the rotated geotransform survived
        assert (o.width, o.height) == (r.width, r.height)
        assert o.dtypes[0] == "uint8"
        ref_img = r.read(1).astype(float)
        out_img = o.read(1).astype(float)
        valid = o.read_masks(1) > 0
    core = np.zeros_like(valid)
    core[40:-40, 40:-40] = True
    sel = valid & core
    assert sel.mean() > 0.5
    assert np.corrcoef(ref_img[sel], out_img[sel])[0, 1] > 0.95
    report = json.loads((tmp_path / "aligned.json").read_text())
    assert report["inliers"] == res.n_inliers
    assert report["model"]["sha256"]
    assert {"read", "extract", "match", "estimate", "write", "total"} <= set(report["timings_s"])
    assert len(report["tie_points"]) == report["matches"]
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_opera_multidate_pair_recovered(opera_pair, tmp_path):
    ref_path, mov_path, m_true, shape = opera_pair
    # the pair differs by a similarity (rotation, scale, shift): fitted as one
    res = register(
        ref_path,
        mov_path,
        tmp_path / "out.tif",
        RegisterConfig(estimate=EstimateConfig(transform="similarity")),
    )
    err = grid_error(res.matrix, m_true, shape)
    assert err < 0.42, f"registration error {err:.3f} px"  # measured 0.311 (affine: 0.971)
    assert err / 2 < res.report["error_estimate"]["rms_px"] < 2 * err  # measured 0.509
    with rasterio.open(tmp_path / "out.tif") as o:
        assert o.dtypes[0] == "float32"
        assert np.isnan(o.nodata)
        data = o.read(1)
    assert np.isnan(data).any() and np.isfinite(data).mean() > 0.2


def test_georef_mode_maps_tie_points(umbra_pair, tmp_path):
    ref_path, mov_path, m_true, shape = umbra_pair
    out = tmp_path / "fixed.tif"
    res = register(ref_path, mov_path, out, RegisterConfig(output=OutputConfig(mode="georef")))
    report = res.report
    with rasterio.open(out) as o, rasterio.open(mov_path) as m, rasterio.open(ref_path) as r:
        np.testing.assert_array_equal(o.read(1), m.read(1))  # pixels unchanged
        assert o.crs == r.crs
        new_t = o.transform
        pix = math.sqrt(abs(r.transform.determinant))
    inl = [tp for tp in report["tie_points"] if tp["inlier"]]
    mov_px = np.array([tp["mov_px"] for tp in inl])
    ref_map = np.array([tp["ref_map"] for tp in inl])
    residual = np.array([tp["residual_px"] for tp in inl])
    d = np.hypot(*(pixel_to_map(new_t, mov_px) - ref_map).T) / pix
    # the written geotransform puts every tie point where the fitted transform does
    np.testing.assert_allclose(d, residual, atol=1e-3)
    assert np.median(d) < 1.5
    # and the corrected geotransform agrees with the truth at the image corners
    corners = np.array([[0, 0], [shape[1] - 1, 0], [0, shape[0] - 1]], dtype=float)
    with rasterio.open(ref_path) as r:
        truth_map = pixel_to_map(r.transform, (m_true @ np.c_[corners, np.ones(3)].T)[:2].T)
    err = np.hypot(*(pixel_to_map(new_t, corners) - truth_map).T) / pix
    assert err.max() < 0.6  # measured 0.420


def test_georef_homography_writes_gcps(umbra_pair, tmp_path):
    ref_path, mov_path, _, _ = umbra_pair
    out = tmp_path / "gcps.tif"
    res = register(
        ref_path,
        mov_path,
        out,
        RegisterConfig(
            estimate=EstimateConfig(transform="homography"), output=OutputConfig(mode="georef")
        ),
    )
    with rasterio.open(out) as o:
        gcps, crs = o.gcps
    assert crs is not None
    assert len(gcps) == res.n_inliers >= 8


def test_implausible_scale_is_rejected(umbra_pair, tmp_path):
    ref_path, mov_path, _, _ = umbra_pair
    out = tmp_path / "o.tif"
    with pytest.raises(DegenerateTransformError):
        register(
            ref_path, mov_path, out, RegisterConfig(estimate=EstimateConfig(scale_range=(0.5, 0.9)))
        )
    assert not out.exists() and not (tmp_path / "o.json").exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bad input through the CLI


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, expected_code: int, *words: str) -> None:
    assert code == expected_code, (code, err)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("sarreg: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


@pytest.mark.parametrize("flags, context_scale", [([], 0.5), (["--no-context"], None)])
def test_cli_success_prints_summary(umbra_pair, tmp_path, capsys, flags, context_scale):
    ref_path, mov_path, _, _ = umbra_pair
    code = main(
        ["register", str(ref_path), str(mov_path), "-o", str(tmp_path / "o.tif"), "--no-progress"]
        + flags
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "inliers" in out and (tmp_path / "o.tif").exists() and (tmp_path / "o.json").exists()
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["settings"]["extract"]["context_scale"] == context_scale


def test_missing_file(umbra_pair, tmp_path, capsys):
    ref_path, _, _, _ = umbra_pair
    code, err = run_cli(
        ["register", ref_path, tmp_path / "nope.tif", "-o", tmp_path / "o.tif"], capsys
    )
    assert_one_line_error(code, err, 3, "nope.tif")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_file(umbra_pair, tmp_path, capsys):
    ref_path, _, _, _ = umbra_pair
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    code, err = run_cli(["register", ref_path, bad, "-o", tmp_path / "o.tif"], capsys)
    assert_one_line_error(code, err, 3, "bad.tif")
    assert not (tmp_path / "o.tif").exists()


def test_band_out_of_range(umbra_pair, tmp_path, capsys):
    ref_path, mov_path, _, _ = umbra_pair
    code, err = run_cli(
        ["register", ref_path, mov_path, "-o", tmp_path / "o.tif", "--band-mov", "3"], capsys
    )
    assert_one_line_error(code, err, 4, "band")
    assert list(tmp_path.iterdir()) == []


def test_no_overlap(umbra_pair, tmp_path, capsys):
    ref_path, mov_path, _, _ = umbra_pair
    with rasterio.open(mov_path) as ds:
        profile, data, t = ds.profile, ds.read(1), ds.transform
    far = write_like(tmp_path / "far.tif", profile, data, transform=t * t.translation(5000, 0))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_cli(["register", ref_path, far, "-o", out_dir / "o.tif"], capsys)
    assert_one_line_error(code, err, 5, "overlap")
    assert list(out_dir.iterdir()) == []


def test_all_nodata(data_dir, tmp_path, capsys):
    with rasterio.open(data_dir / OPERA / DATE1) as ds:
        profile, data = ds.profile, ds.read(1)
    empty = write_like(tmp_path / "empty.tif", profile, np.full_like(data, np.nan))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_cli(
        ["register", data_dir / OPERA / DATE1, empty, "-o", out_dir / "o.tif"], capsys
    )
    assert_one_line_error(code, err, 6, "nodata")
    assert list(out_dir.iterdir()) == []


def test_constant_image(data_dir, tmp_path, capsys):
    with rasterio.open(data_dir / OPERA / DATE1) as ds:
        profile, data = ds.profile, ds.read(1)
    const = write_like(tmp_path / "const.tif", profile, np.full_like(data, 0.05))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_cli(
        ["register", data_dir / OPERA / DATE1, const, "-o", out_dir / "o.tif"], capsys
    )
    assert_one_line_error(code, err, 6, "constant")
    assert list(out_dir.iterdir()) == []


def test_too_few_matches(umbra_pair, data_dir, tmp_path, capsys):
    """Unrelated images with a strict similarity threshold leave too few matches."""
    ref_path, _, _, _ = umbra_pair
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        other = ds.read(1, window=Window(1400, 100, 512, 512))
        profile = ds.profile
    with rasterio.open(ref_path) as ds:
        t = ds.transform
    unrelated = write_like(tmp_path / "unrelated.tif", profile, other, transform=t)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_cli(
        ["register", ref_path, unrelated, "-o", out_dir / "o.tif", "--min-similarity", "0.995"],
        capsys,
    )
    assert_one_line_error(code, err, 7, "match")
    assert list(out_dir.iterdir()) == []


def test_output_not_writable(umbra_pair, tmp_path, capsys):
    ref_path, mov_path, _, _ = umbra_pair
    code, err = run_cli(
        ["register", ref_path, mov_path, "-o", tmp_path / "no" / "dir" / "o.tif"], capsys
    )
    assert_one_line_error(code, err, 9)


def test_output_exists_without_overwrite(umbra_pair, tmp_path, capsys):
    ref_path, mov_path, _, _ = umbra_pair
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    code, err = run_cli(["register", ref_path, mov_path, "-o", out], capsys)
    assert_one_line_error(code, err, 10, "--overwrite")
    assert out.read_bytes() == b"keep me"


def test_georef_mode_needs_georeferenced_reference(data_dir, tmp_path, capsys):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        a = ds.read(1, window=Window(700, 700, 256, 256))
    png = tmp_path / "plain.png"
    cv2.imwrite(str(png), a)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_cli(["register", png, png, "-o", out_dir / "o.tif", "--mode", "georef"], capsys)
    assert_one_line_error(code, err, 11, "georef")
    assert list(out_dir.iterdir()) == []


def test_unknown_transform_model(umbra_pair, tmp_path, capsys):
    ref_path, mov_path, _, _ = umbra_pair
    code, err = run_cli(
        ["register", ref_path, mov_path, "-o", tmp_path / "o.tif", "--transform", "spline"], capsys
    )
    assert_one_line_error(code, err, 12, "affine")


def test_plain_png_pair_registers(data_dir, tmp_path):
    """Non-georeferenced inputs: no prior, output on the reference pixel grid without a CRS."""
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        a = ds.read(1, window=Window(600, 900, 384, 384))
    w = affine_about_centre(a.shape, deg=-5.0, scale=1.0, shift=(4.0, 7.0))
    b = cv2.warpAffine(a, w[:2], (384, 384), flags=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "a.png"), a)
    cv2.imwrite(str(tmp_path / "b.png"), b)
    res = register(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "o.tif")
    err = grid_error(res.matrix, np.linalg.inv(w), a.shape)
    assert err < 0.15  # measured 0.059
    assert err / 2 < res.predicted_error < 2 * err  # measured 0.107
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.crs is None and (o.width, o.height) == (384, 384)


def test_extract_cli_writes_npz(umbra_pair, tmp_path, capsys):
    ref_path, _, _, _ = umbra_pair
    out = tmp_path / "f.npz"
    code = main(["extract", str(ref_path), "-o", str(out), "--top-k", "300", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with np.load(out) as z:
        assert z["keypoints"].shape[1] == 3 and z["descriptors"].shape[1] == 256
        n = len(z["scores"])
        assert n == 300  # top-k of far more candidates
        assert z["keypoints"].shape[0] == z["descriptors"].shape[0] == n
        np.testing.assert_allclose(np.linalg.norm(z["descriptors"], axis=1), 1.0, atol=1e-4)
        xy = z["keypoints"][:, :2]
        desc = z["descriptors"]
    assert xy.min() >= 0 and xy.max() <= 511
    # --no-context: the network's descriptors alone, the point part of the extended ones
    bare = tmp_path / "bare.npz"
    args = ["extract", str(ref_path), "-o", str(bare), "--top-k", "300", "--no-progress"]
    assert main(args + ["--no-context"]) == 0, capsys.readouterr().err
    with np.load(bare) as z:
        assert z["descriptors"].shape == (n, 128)
        np.testing.assert_allclose(z["keypoints"][:, :2], xy)
        np.testing.assert_allclose(z["descriptors"], desc[:, :128] * np.sqrt(1.5), atol=1e-4)


def test_failure_after_the_image_leaves_no_outputs(umbra_pair, tmp_path, monkeypatch):
    """Outputs go as a group: when the report cannot be written, the image written just
    before is removed again, and the error comes through."""
    import sarreg.report

    ref_path, mov_path, _, _ = umbra_pair

    def failing_write_report(report, path):
        raise OSError("disk full")

    monkeypatch.setattr(sarreg.report, "write_report", failing_write_report)
    out = tmp_path / "out.tif"
    with pytest.raises(OSError, match="disk full"):
        register(ref_path, mov_path, out, RegisterConfig(progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
