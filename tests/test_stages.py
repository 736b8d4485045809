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
                 "--mode", mode, "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rep = json.loads(out.with_suffix(".json").read_text())
    truth = np.array(json.loads((DEMO / "truth.json").read_text())["matrix_mov_to_ref"])
    assert rep["moving"]["path"] == vsimem_moving
    assert mapping_rmse(np.array(rep["transform"]["pixel_matrix"]), truth, (250, 350)) < 0.5
    with rasterio.open(out) as o, rasterio.open(vsimem_moving) as m:
        assert o.read(1).any()
        if mode == "georef":  # the moving pixels, unchanged
            assert np.array_equal(o.read(1), m.read(1), equal_nan=True)
