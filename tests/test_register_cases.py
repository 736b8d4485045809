"""Registration cases not covered elsewhere: a moving image finer than the reference, inputs in
two different CRSs, a multi-band moving file, and the exit codes 8 and 14 through the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from sarreg.cli import main
from sarreg.config import EstimateConfig
from sarreg.geometry import apply_matrix, mapping_rmse, prior_from_georef
from sarreg.pipeline import RegisterConfig, register

UMBRA = "umbra_mount_yasur.tif"


def _write(path, data, transform, crs, nodata=None):
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=str(data.dtype), transform=transform, crs=crs,
                       nodata=nodata) as ds:  # fmt: skip
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def umbra_crop(data_dir):
    """A 512 x 512 crop of the Umbra sample: (array uint8, geotransform (rotated), CRS)."""
    with rasterio.open(data_dir / UMBRA) as ds:
        win = Window(700, 700, 512, 512)
        return ds.read(1, window=win), ds.window_transform(win), ds.crs


def test_moving_image_finer_than_the_reference(umbra_crop, tmp_path):
    """A moving image at half the reference pixel size is read decimated to the reference pixel
    size; the fitted matrix maps its full-resolution pixel centres, and the georeferencing error
    (8 reference px east, 5 south) is found and reported."""
    ref, ref_t, crs = umbra_crop
    # moving pixel centre x' shows reference pixel centre (x' + 0.5) / 2 - 0.5
    mov = cv2.resize(ref, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    truth = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
    mov_t = ref_t @ Affine.translation(8.0, 5.0) @ Affine.scale(0.5)  # off by (8, 5) ref px
    r = _write(tmp_path / "ref.tif", ref, ref_t, crs)
    m = _write(tmp_path / "mov.tif", mov, mov_t, crs)
    res = register(
        r, m, tmp_path / "o.tif", RegisterConfig(estimate=EstimateConfig(transform="similarity"))
    )
    err = mapping_rmse(res.matrix, truth, mov.shape)
    assert err < 0.03, f"registration error {err:.3f} px"  # measured 0.009
    rep = res.report
    assert rep["moving"]["work_decimation"] == pytest.approx(2.0)
    assert rep["reference"]["work_decimation"] == pytest.approx(1.0)
    assert rep["transform"]["scale"] == pytest.approx(0.5, abs=0.002)
    np.testing.assert_allclose(rep["transform"]["georeferencing_shift_at_centre"]["ref_px"],
                               [-8.0, -5.0], atol=0.3)  # fmt: skip
    with rasterio.open(tmp_path / "o.tif") as o:
        assert (o.width, o.height) == (512, 512)
        out = o.read(1).astype(float)
    core = (slice(40, -40), slice(40, -40))
    assert np.corrcoef(out[core].ravel(), ref[core].astype(float).ravel())[0, 1] > 0.95


def test_inputs_in_two_different_crs(umbra_crop, tmp_path):
    """Reference in UTM 59S, moving reprojected into UTM 58S (rotated by 1.5 degrees there) and its
    georeferencing then shifted by 6 m east, 4 m north: registration undoes the shift, and the
    result agrees with the exact (reprojection) mapping between the two grids."""
    ref, rotated_t, crs = umbra_crop
    ref_t = Affine(0.6, 0.0, rotated_t.c, 0.0, -0.6, rotated_t.f)  # north-up in UTM 59S
    dst_crs = "EPSG:32758"
    h, w = ref.shape
    corners = np.array([ref_t @ xy for xy in [(0, 0), (w, 0), (w, h), (0, h)]])
    bounds = (*corners.min(0), *corners.max(0))  # left, bottom, right, top
    t, width, height = calculate_default_transform(crs, dst_crs, w, h, *bounds, resolution=0.6)
    mov = np.zeros((height, width), np.float32)
    reproject(ref.astype(np.float32), mov, src_transform=ref_t, src_crs=crs, dst_transform=t,
              dst_crs=dst_crs, resampling=Resampling.bilinear, src_nodata=None,
              dst_nodata=np.nan)  # fmt: skip
    shifted = Affine.translation(6.0, 4.0) @ t  # map coordinates 6 m east, 4 m north
    r = _write(tmp_path / "ref.tif", ref, ref_t, crs)
    m = _write(tmp_path / "mov.tif", mov, shifted, dst_crs, nodata=float("nan"))
    res = register(r, m, tmp_path / "o.tif")
    rep = res.report
    assert rep["reference"]["crs"] != rep["moving"]["crs"]
    assert rep["used_georeferencing_prior"] is True
    # the truth: the unshifted georeferencing, i.e. the reprojection itself
    exact = prior_from_georef(ref_t, crs, t, dst_crs)
    ys, xs = np.mgrid[60 : height - 60 : 24, 60 : width - 60 : 24]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    inside = exact(pts)
    keep = (inside >= 40).all(1) & (inside[:, 0] < w - 40) & (inside[:, 1] < h - 40)
    d = np.hypot(*(apply_matrix(res.matrix, pts[keep]) - inside[keep]).T)
    # measured 0.445 px (a 0.37 px bias along x, also without a change of CRS: same-CRS
    # rotated grid 0.461 px)
    assert keep.sum() > 100 and np.sqrt(np.mean(d**2)) < 0.6, np.sqrt(np.mean(d**2))
    shift_m = rep["transform"]["georeferencing_shift_at_centre"]["map_distance"]
    assert shift_m == pytest.approx(np.hypot(6.0, 4.0), abs=0.5)
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.crs == crs and o.transform.almost_equals(ref_t)


def test_multiband_moving_file_registers_the_chosen_band(umbra_crop, tmp_path, capsys):
    """The band given (`--band-mov 2`) is registered and written: same matrix and same output
    pixels as the single-band file holding that band; the other bands are not it."""
    ref, ref_t, crs = umbra_crop
    w = np.array([[1.0, 0.03, -4.5], [-0.03, 1.0, 6.25], [0.0, 0.0, 1.0]])
    mov = cv2.warpAffine(ref, w[:2], (512, 512), flags=cv2.INTER_LINEAR)
    noise = np.random.default_rng(0).integers(0, 255, size=mov.shape, dtype=np.uint8)
    r = _write(tmp_path / "ref.tif", ref, ref_t, crs)
    single = _write(tmp_path / "single.tif", mov, ref_t, crs)
    multi = _write(tmp_path / "multi.tif", np.stack([noise, mov, noise[::-1]]), ref_t, crs)
    out1, out3 = tmp_path / "o1.tif", tmp_path / "o3.tif"
    assert main(["register", str(r), str(single), "-o", str(out1), "--no-progress"]) == 0
    code = main(["register", str(r), str(multi), "-o", str(out3), "--band-mov", "2",
                 "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rep1 = json.loads(out1.with_suffix(".json").read_text())
    rep3 = json.loads(out3.with_suffix(".json").read_text())
    assert rep3["moving"]["band"] == 2
    assert rep3["transform"]["pixel_matrix"] == rep1["transform"]["pixel_matrix"]
    m = np.array(rep3["transform"]["pixel_matrix"])
    assert mapping_rmse(m, np.linalg.inv(w), (512, 512)) < 0.15  # measured 0.080
    with rasterio.open(out1) as a, rasterio.open(out3) as b:
        assert b.count == 1
        np.testing.assert_array_equal(b.read(1), a.read(1))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("sarreg: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_strong_perspective_is_exit_8(umbra_crop, tmp_path, capsys):
    """A homography that stretches the image 1.6x from side to side is implausible for two SAR
    images of one area: refused (exit 8) with a one-line message, nothing written."""
    ref = umbra_crop[0]
    h = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0012, 0.0, 1.0]])
    mov = cv2.warpPerspective(ref, h, (512, 512), flags=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "a.png"), ref)
    cv2.imwrite(str(tmp_path / "b.png"), mov)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["register", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o",
                 str(out / "o.tif"), "--transform", "homography", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 8, err
    line = _one_error_line(err)
    assert "perspective" in line and "--transform" in line
    assert list(out.iterdir()) == []


def test_non_finite_training_loss_is_exit_14(data_dir, tmp_path, capsys):
    """An absurd learning rate blows the loss up at step 2: `sarreg train` stops with exit 14,
    names the loss, the step and the checkpoint to resume from, which holds step 1."""
    from sarreg.model.checkpoint import load_checkpoint

    cfg = tmp_path / "nan.yaml"
    cfg.write_text(
        "name: nan\nbatch_size: 2\nsteps: 4\nseed: 0\ndevice: cpu\nthreads: 1\n"
        "checkpoint_every: 1\nlog_every: 1\n"
        "model: {arch: fast_r2d2, mchan: 1, dim: 16}\n"
        f"data:\n  crop: 64\n  sources:\n    - {{path: {data_dir / UMBRA}, "
        "display_as: amplitude}\n"
        "optim: {lr: 1.0e+30, warmup_steps: 0}\n"
        "sampler: {border: 8, query_step: 8, neg_step: 8}\n"
        "val: {sources: [], pairs: 0}\n"
    )
    out = tmp_path / "run"
    code = main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 14, err
    line = _one_error_line(err)
    assert "nan" in line and "step 2" in line and "last.pt" in line
    assert load_checkpoint(out / "last.pt").training["step"] == 1
