"""The output stage's choices (sarreg.output): which tie points become GCPs, and the clean-up
of a failed group, on fitted transforms of synthetic tie points (no images)."""

from __future__ import annotations

import numpy as np
import pytest

from sarreg import geometry
from sarreg.config import RegisterConfig, with_values
from sarreg.mapping import fit_mapping
from sarreg.output import gcp_indices, remove_quietly

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
