"""The output stage's choices (sarreg.output): which tie points become GCPs, and the clean-up
of a failed group, on fitted transforms of synthetic tie points (no images)."""

from __future__ import annotations

import numpy as np
import pytest
from records import fit_of

from sarreg import geometry
from sarreg.config import RegisterConfig, with_values
from sarreg.mapping import fit_mapping
from sarreg.output import gcp_indices, remove_quietly, write_output

RNG = np.random.default_rng(0)
XY_MOV = RNG.uniform(0, 500, (300, 2))
#: a gentle perspective, which the non-linear models follow too
TRUE = np.array([[1.01, 0.02, 5.0], [-0.01, 0.99, -3.0], [1e-5, -2e-5, 1.0]])
XY_REF = geometry.apply_matrix(TRUE, XY_MOV)


def _fit(model: str):
    if model in geometry.MODELS:
        return geometry.fit_transform(XY_MOV, XY_REF, model=model)
    return fit_mapping(XY_MOV, XY_REF, model)


def _config(mode: str, model: str) -> RegisterConfig:
    """Settings as the command line gives them: the mode is a string read from argv (equal to
    the choice, not the same object)."""
    mode = "".join(list(mode))
    return with_values(RegisterConfig(), {"output.mode": mode, "estimate.transform": model,
                                          "output.max_gcps": 40})  # fmt: skip


@pytest.mark.parametrize("model", ["translation", "similarity", "affine", "homography", "tps"])
def test_a_resampled_output_gets_no_gcps(model):
    assert gcp_indices(_fit(model), XY_MOV, _config("resample", model)) is None


@pytest.mark.parametrize("model", ["translation", "similarity", "affine"])
def test_a_georeferenced_linear_fit_gets_a_geotransform_not_gcps(model):
    assert gcp_indices(_fit(model), XY_MOV, _config("georef", model)) is None


def test_a_georeferenced_homography_gets_every_inlier_as_a_gcp():
    fit = _fit("homography")
    idx = gcp_indices(fit, XY_MOV, _config("georef", "homography"))
    assert fit.inliers.sum() == 300
    assert idx.tolist() == list(range(300))


@pytest.mark.parametrize("model", ["poly2", "tps"])
def test_a_georeferenced_non_linear_fit_gets_at_most_max_gcps_inliers(model):
    fit = _fit(model)
    idx = gcp_indices(fit, XY_MOV, _config("georef", model))
    assert 0 < len(idx) <= 40 and len(set(idx.tolist())) == len(idx)
    assert fit.inliers[idx].all()


def test_removing_a_failed_group_skips_files_already_gone(tmp_path):
    written = tmp_path / "out.tif"
    written.write_bytes(b"x")
    remove_quietly([str(tmp_path / "never_written.json"), str(written)])
    assert list(tmp_path.iterdir()) == []


def test_a_resampled_output_is_on_the_reference_grid(tmp_path):
    """A 48 x 64 moving image resampled by a 5 px shift onto an 80 x 80 reference grid: the
    output has the reference's size, transform and CRS, and the moving pixels where the
    shift puts them."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from sarreg.io import raster_info

    t = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    crs = CRS.from_epsg(32633)
    mov = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    with rasterio.open(tmp_path / "mov.tif", "w", driver="GTiff", width=64, height=48, count=1,
                       dtype="float32") as dst:  # fmt: skip
        dst.write(mov, 1)
    with rasterio.open(tmp_path / "ref.tif", "w", driver="GTiff", width=80, height=80, count=1,
                       dtype="float32", transform=t, crs=crs) as dst:  # fmt: skip
        dst.write(np.zeros((80, 80), np.float32), 1)
    matrix = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0], [0.0, 0.0, 1.0]])
    fit = fit_of(matrix)
    config = with_values(_config("resample", "affine"), {"output.resampling": "nearest"})
    out = str(tmp_path / "out.tif")
    ref_info = raster_info(str(tmp_path / "ref.tif"))
    assert (
        write_output(out, str(tmp_path / "mov.tif"), ref_info, fit, None, None, None, config) == out
    )
    with rasterio.open(out) as src:
        assert (src.width, src.height, src.transform, src.crs) == (80, 80, t, crs)
        np.testing.assert_array_equal(src.read(1)[5:53, 5:69], mov)
