"""Small laws of the input stage (sarreg.inputs): pixel-size ratios, read sizes and the checks
made on the two files' metadata before any pixel is read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from records import raster_info

from sarreg.config import RegisterConfig, with_values
from sarreg.errors import NotGeoreferencedError
from sarreg.inputs import (
    Inputs,
    coarse_read_side,
    open_inputs,
    prior_scale,
    snap_decimation,
    tile_decimations,
    work_sizes,
)


@pytest.mark.parametrize(
    ("d", "snapped"),
    [(1.0, 1.0), (1.99, 2.0), (3.05, 3.0), (2.25, 2.25), (2.3, 2.3), (1.5, 1.5), (2.6, 2.6)],
)
def test_decimations_within_ten_percent_of_an_integer_snap_to_it(d, snapped):
    assert snap_decimation(d) == snapped


@pytest.mark.parametrize(
    ("scale", "decs"),
    [(2.0, (2.0, 1.0)), (0.5, (1.0, 2.0)), (1.0, (1.0, 1.0)), (1.2, (1.0, 1.0)),
     (0.3, (1.0, 1 / 0.3)), (4.1, (4.0, 1.0))],
)  # fmt: skip
def test_the_finer_images_tiles_are_read_at_the_coarser_pixel_size(scale, decs):
    assert tile_decimations(scale) == pytest.approx(decs)


def test_prior_scale_is_the_local_scale_at_the_moving_centre():
    """A mapping whose Jacobian determinant is 1 + x/100 + y/100: at the centre (50.5, 30.5)
    of a 101 x 61 moving image, the scale is sqrt(1.81)."""

    def prior(xy):
        x, y = xy[:, 0], xy[:, 1]
        return np.c_[x * (1 + y / 100), y * (1 + x / 100)]

    assert prior_scale(prior, (61, 101)) == pytest.approx(math.sqrt(1.81))
    assert prior_scale(lambda xy: 2.0 * xy + 7.0, (60, 100)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("ref", "mov", "scale", "sizes"),
    [
        ((2048, 2048), (1024, 1024), 2.0, (1024, None)),  # reference finer
        ((1024, 1024), (1024, 1024), 0.5, (None, 512)),  # moving finer
        ((4096, 1000), (1024, 800), None, (1024, None)),  # no georeferencing
        ((1024, 1024), (1024, 1024), 1.0, (None, None)),
        # both 2048 px, reference pixels half the size: the reference read at 512
        ((2048, 2048), (2048, 2048), 2.0, (512, 1024)),
        ((4096, 1000), (1024, 800), 0.0, (1024, None)),  # a degenerate prior: as without
    ],
)
def test_work_sizes_bring_both_reads_to_one_pixel_size(ref, mov, scale, sizes):
    assert work_sizes(raster_info(ref), raster_info(mov), 1024, scale) == sizes


@pytest.mark.parametrize(
    ("ref", "mov", "scale", "side"),
    [
        ((1024, 1024), (2048, 2048), None, 1024),  # plain: the moving read is decimated
        ((2048, 2048), (1024, 1024), None, 1024),
        ((2048, 2048), (1024, 1024), 2.0, 1024),  # the reference read at its tiles' decimation
        ((4096, 4096), (1024, 1024), 2.0, 1024),
        ((700, 500), (600, 300), 1.0, 592),  # read whole: as many pixels as 592 x 592
        ((512, 512), (900, 400), None, 600),
        ((1024, 256), (224, 224), 1.0, 512),  # a long strip: 512 x 512 pixels
    ],
)
def test_coarse_read_side_is_the_larger_read(ref, mov, scale, side):
    inputs = Inputs("r.tif", "m.tif", raster_info(ref), raster_info(mov), None, scale)
    assert coarse_read_side(inputs, RegisterConfig()) == side


def _tif(path, transform=None) -> str:
    crs = None if transform is None else CRS.from_epsg(32633)
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="float32",
                       transform=transform, crs=crs) as ds:  # fmt: skip
        ds.write(np.ones((32, 32), np.float32), 1)
    return str(path)


def test_metadata_checks_of_plain_images(tmp_path):
    """Settings given as the command line gives them (strings read from argv)."""
    ref, mov = _tif(tmp_path / "ref.tif"), _tif(tmp_path / "mov.tif")

    def config(**values):
        return with_values(RegisterConfig(), {k: "".join(list(v)) for k, v in values.items()})

    with pytest.raises(NotGeoreferencedError, match="--mode georef needs a georeferenced"):
        open_inputs(ref, mov, config(**{"output.mode": "georef"}))
    with pytest.raises(NotGeoreferencedError, match="GeoJSON tie-point export"):
        open_inputs(ref, mov, config(**{"output.gcps": str(tmp_path / "tie.geojson")}))
    inputs = open_inputs(ref, mov, config(**{"output.gcps": str(tmp_path / "tie.CSV")}))
    assert not inputs.georef and inputs.prior_full is None and inputs.prior_scale is None


def test_georeferenced_inputs_get_the_prior_and_its_scale(tmp_path):
    ref = _tif(tmp_path / "ref.tif", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
    mov = _tif(tmp_path / "mov.tif", Affine(20.0, 0.0, 500040.0, 0.0, -20.0, 4000000.0))
    inputs = open_inputs(ref, mov, RegisterConfig())
    assert inputs.georef and inputs.prior_scale == pytest.approx(2.0)
    # moving pixel centre (0, 0) is at map (500050, 3999990): reference pixel centre (4.5, 0.5)
    np.testing.assert_allclose(inputs.prior_full(np.array([[0.0, 0.0]])), [[4.5, 0.5]])
