"""The georeferencing prior: it is what makes a repeated texture register at the right copy.

The pair: a real 256 x 256 Umbra crop repeated four times side by side is the reference
(1024 x 256, north-up, 1 m pixels); the moving image is a 224 x 224 crop of its second copy.
The same pixels appear at four places of the reference, so the image content alone cannot tell
which copy the moving image shows: only the moving file's georeferencing can, and it is off by a
known shift (20 px east, 12 px north), well inside the default search radius (64 px) and far
from the next copy (256 px).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from sarreg.cli import main
from sarreg.config import EstimateConfig
from sarreg.geometry import mapping_rmse
from sarreg.pipeline import RegisterConfig, register

PERIOD = 256
X0, Y0, SIZE = 279, 16, 224  # the moving crop in the reference (second copy)
GEOREF_ERROR_PX = (20.0, -12.0)  # moving geotransform puts its pixels this far off (x, y)
TRUTH = np.array([[1.0, 0.0, X0], [0.0, 1.0, Y0], [0.0, 0.0, 1.0]])
REF_T = Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 4000000.0)


@pytest.fixture(scope="module")
def periodic_pair(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("periodic")
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        tile = ds.read(1, window=Window(700, 700, PERIOD, PERIOD))
    ref = np.tile(tile, (1, 4))
    mov = ref[Y0 : Y0 + SIZE, X0 : X0 + SIZE]
    mov_t = REF_T * Affine.translation(X0 + GEOREF_ERROR_PX[0], Y0 + GEOREF_ERROR_PX[1])
    profile = dict(driver="GTiff", dtype="uint8", count=1, crs="EPSG:32633")
    paths = []
    for name, data, t in (("ref.tif", ref, REF_T), ("mov.tif", mov, mov_t)):
        path = tmp / name
        with rasterio.open(path, "w", width=data.shape[1], height=data.shape[0], transform=t,
                           **profile) as ds:  # fmt: skip
            ds.write(data, 1)
        paths.append(path)
    return paths[0], paths[1]


def _predicted(mov_px: np.ndarray) -> np.ndarray:
    """Where the (wrong) georeferencing puts moving pixel centres in the reference."""
    return mov_px + np.array([X0 + GEOREF_ERROR_PX[0], Y0 + GEOREF_ERROR_PX[1]])


def test_prior_picks_the_right_copy_and_reports_the_georeferencing_shift(periodic_pair):
    ref, mov = periodic_pair
    res = register(ref, mov, None, RegisterConfig(estimate=EstimateConfig(transform="translation")))
    err = mapping_rmse(res.matrix, TRUTH, (SIZE, SIZE))
    assert err < 0.1, f"registration error {err:.3f} px (0.06 px measured)"
    assert err / 2 < res.predicted_error < 2 * err  # measured 0.052
    report = res.report
    assert report["used_georeferencing_prior"] is True
    shift = report["transform"]["georeferencing_shift_at_centre"]
    # found - predicted at the centre: the georeferencing error, undone
    np.testing.assert_allclose(shift["ref_px"], [-20.0, 12.0], atol=0.15)
    # 1 m pixels, map y points north (pixel rows south)
    np.testing.assert_allclose(shift["map_units"], [-20.0, -12.0], atol=0.15)
    assert shift["map_distance"] == pytest.approx(np.hypot(20.0, 12.0), abs=0.15)


def test_without_the_prior_the_texture_is_ambiguous(periodic_pair, tmp_path, capsys):
    """`--no-prior` on this pair lands on another copy: the pair really needs the prior
    (this is what the first test relies on to notice a prior that is ignored)."""
    ref, mov = periodic_pair
    out = tmp_path / "o.tif"
    code = main(["register", str(ref), str(mov), "-o", str(out), "--no-prior", "--no-progress",
                 "--transform", "translation"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["used_georeferencing_prior"] is False
    assert report["settings"]["estimate"]["use_prior"] is False
    m = np.array(report["transform"]["pixel_matrix"])
    assert mapping_rmse(m, TRUTH, (SIZE, SIZE)) > PERIOD / 2  # another copy, not the truth
    shift = report["transform"]["georeferencing_shift_at_centre"]["ref_px"]
    # the report still tells how far the result lies from the georeferencing
    assert np.hypot(*shift) > PERIOD / 2


def test_search_radius_bounds_every_match(periodic_pair, tmp_path, capsys):
    """Tie points lie within the search radius (plus the refinement's +-2.5 px) of the position
    the georeferencing predicts; the default radius lets matches come from farther."""
    ref, mov = periodic_pair
    wide = register(
        ref, mov, None, RegisterConfig(estimate=EstimateConfig(transform="translation"))
    )
    out = tmp_path / "o.tif"
    code = main(["register", str(ref), str(mov), "-o", str(out), "--search-radius", "30",
                 "--no-progress", "--transform", "translation"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    narrow = json.loads(out.with_suffix(".json").read_text())
    assert narrow["settings"]["estimate"]["search_radius"] == 30.0
    assert narrow["used_georeferencing_prior"] is True

    def distances(report):
        tp = report["tie_points"]
        ref_px = np.array([t["ref_px"] for t in tp])
        mov_px = np.array([t["mov_px"] for t in tp])
        return np.hypot(*(ref_px - _predicted(mov_px)).T)

    assert distances(narrow).max() <= 30.0 + 2.5
    assert distances(wide.report).max() > 32.5  # the bound above is not trivially met
    m = np.array(narrow["transform"]["pixel_matrix"])
    assert mapping_rmse(m, TRUTH, (SIZE, SIZE)) < 0.1


def test_a_radius_smaller_than_the_georeferencing_error_is_not_a_wrong_answer(periodic_pair):
    """Georeferencing off by more than the search radius: the matches inside it are false.
    The result must be one of the copies (matching without the prior) or a refusal, never a
    transform near the wrong prediction."""
    from sarreg.errors import SarregError

    ref, mov = periodic_pair
    try:
        res = register(
            ref,
            mov,
            None,
            RegisterConfig(estimate=EstimateConfig(transform="translation", search_radius=8.0)),
        )
    except SarregError:
        return
    dx = res.matrix[0, 2] - X0
    assert abs(dx - PERIOD * round(dx / PERIOD)) < 0.5 and abs(res.matrix[1, 2] - Y0) < 0.5
