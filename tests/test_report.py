"""Report helpers: JSON conversion/round trip, checkerboard, diagnostic PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from records import fit_of, raster_info, work_raster

from sarreg.errors import OutputExistsError
from sarreg.report import (
    _display,
    _to_display_xy,
    checkerboard,
    lines_drawn,
    peak_memory_mb,
    plot_registration,
    side_by_side,
    to_jsonable,
    transform_entry,
    write_report,
)


@dataclass
class _Fit:
    model: str
    matrix: np.ndarray
    inliers: np.ndarray
    rmse: np.float32


def test_to_jsonable_types():
    crs_wkt = CRS.from_wkt(
        'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    )
    out = to_jsonable(
        {
            1: np.int16(3),
            "f": np.float64("nan"),
            "inf": float("inf"),
            "b": np.bool_(False),
            "t": (1, 2.5),
            "p": Path("/tmp/x.tif"),
            "a": Affine(30.0, 0.0, 756750.0, 0.0, -30.0, 9409440.0),
            "crs": CRS.from_epsg(32754),
            "local": crs_wkt,
        }
    )
    assert out["1"] == 3 and type(out["1"]) is int
    assert out["f"] is None and out["inf"] is None and out["b"] is False
    assert out["t"] == [1, 2.5] and out["p"] == "/tmp/x.tif"
    assert out["a"] == [30.0, 0.0, 756750.0, 0.0, -30.0, 9409440.0]
    assert out["crs"] == "EPSG:32754"
    assert out["local"].startswith("LOCAL_CS") and CRS.from_wkt(out["local"]) == crs_wkt
    json.dumps(out, allow_nan=False)  # strict JSON


def test_write_report_round_trip(tmp_path, data_dir):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as src:
        transform, crs = src.transform, src.crs  # rotated geotransform
    fit = _Fit(
        model="affine",
        matrix=np.array([[1.01, 0.02, 3.5], [-0.02, 0.99, -1.25], [0, 0, 1]]),
        inliers=np.array([True, False, True]),
        rmse=np.float32(0.75),
    )
    report = {
        "fit": fit,
        "reference": {"path": data_dir / "umbra_mount_yasur.tif", "transform": transform},
        "crs": crs,
        "n_matches": np.int64(3),
        "keypoints": np.arange(6, dtype=np.float32).reshape(3, 2),
        "nodata": np.float32("nan"),
    }
    path = write_report(report, tmp_path / "report.json")
    back = json.loads(path.read_text())
    assert back["fit"]["model"] == "affine"
    np.testing.assert_allclose(back["fit"]["matrix"], fit.matrix)
    assert back["fit"]["inliers"] == [True, False, True]
    assert back["fit"]["rmse"] == pytest.approx(0.75)
    assert Affine(*back["reference"]["transform"]) == transform
    assert back["reference"]["path"].endswith("umbra_mount_yasur.tif")
    assert CRS.from_user_input(back["crs"]) == crs and back["crs"] == "EPSG:32759"
    assert back["n_matches"] == 3 and back["keypoints"] == [[0, 1], [2, 3], [4, 5]]
    assert back["nodata"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(OutputExistsError):
        write_report(report, path, overwrite=False)


def test_checkerboard_alternates():
    a = np.zeros((16, 24), np.float32)
    b = np.ones((16, 24), np.uint8)
    cb = checkerboard(a, b, tiles=4)  # tiles of 4 rows x 6 columns
    assert cb.dtype == np.float32 and cb.shape == (16, 24)
    assert (cb[:4, :6] == 0).all() and (cb[:4, 6:12] == 1).all()
    assert (cb[4:8, :6] == 1).all() and (cb[4:8, 6:12] == 0).all()
    assert (cb[12:, 18:] == 0).all()  # tile (3, 3): even
    tile_sums = cb.reshape(4, 4, 4, 6).sum(axis=(1, 3)) / 24
    np.testing.assert_array_equal(tile_sums, (np.add.outer(np.arange(4), np.arange(4)) % 2))
    odd = checkerboard(np.zeros((7, 5)), np.ones((7, 5)), tiles=2)  # uneven split
    np.testing.assert_array_equal(odd[:, 0], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(odd[0], [0, 0, 0, 1, 1])
    with pytest.raises(ValueError):
        checkerboard(a, b[:-1])


def _unit(x):
    lo, hi = np.nanpercentile(x, [1, 99])
    return np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)


def test_plot_registration_png(tmp_path, data_dir):
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as src:
        ref = _unit(src.read(1, window=Window(600, 600, 300, 240)).astype(np.float32))
        mov = _unit(src.read(1, window=Window(620, 590, 200, 200)).astype(np.float32))
    rng = np.random.default_rng(0)
    kp_mov = rng.uniform(0, 199, (500, 2))
    kp_ref = kp_mov + [20.0, -10.0]
    inliers = rng.random(500) < 0.7
    kp_ref[~inliers] = rng.uniform(0, 239, ((~inliers).sum(), 2))
    warped = np.full_like(ref, np.nan)
    warped[10:210, :180] = mov[:, 20:200]
    out = plot_registration(ref, mov, warped, kp_ref, kp_mov, inliers, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000
    img = mpimg.imread(out)
    assert img.shape == (600, 1400, 4)
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]

    # no warped image and no matches at all still give a plot
    out2 = plot_registration(ref, mov, None, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, bool),
                             tmp_path / "empty.png")  # fmt: skip
    assert mpimg.imread(out2).shape == (600, 1400, 4)
    with pytest.raises(OutputExistsError):
        plot_registration(ref, mov, None, kp_ref, kp_mov, inliers, out2, overwrite=False)


def test_plot_decimates_large_images(tmp_path):
    """Images beyond the display size are decimated; keypoints follow them (no error)."""
    ref = np.tile(np.linspace(0, 1, 4200, dtype=np.float32), (120, 1))  # (120, 4200)
    kp = np.array([[4199.0, 119.0], [0.0, 0.0], [2100.5, 60.5]])
    out = plot_registration(ref, ref[:, :3000], ref, kp, kp * 0.5, [True, True, False],
                            tmp_path / "big.png", checker=3)  # fmt: skip
    assert mpimg.imread(out).shape == (600, 1400, 4)


def test_lines_drawn_keep_up_to_a_quarter_for_outliers():
    """At most 300 lines: a quarter go to outliers when both abound; either kind fills the
    rest when the other is short; each set is spread from the first to the last match."""
    many = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    i, o = lines_drawn(many, 300)
    assert (len(i), len(o)) == (225, 75)
    assert many[i].all() and not many[o].any()
    assert (i[0], i[-1], o[0], o[-1]) == (0, 999, 1000, 1999)
    few_out, few_in = np.r_[np.ones(1000, bool), np.zeros(10, bool)], many[990:]
    assert [len(x) for x in lines_drawn(few_out)] == [290, 10]
    assert [len(x) for x in lines_drawn(few_in)] == [10, 290]


@pytest.mark.parametrize(
    ("shape", "step"), [((100, 300), 1), ((2048, 10), 1), ((2049, 10), 2), ((10, 5000), 3)]
)
def test_display_decimates_by_the_smallest_step_that_fits(shape, step):
    shown, s = _display(np.zeros(shape), 2048)
    assert s == step
    assert shown.shape == (-(-shape[0] // step), -(-shape[1] // step))
    assert max(shown.shape) <= 2048


def test_plot_marks_the_inliers_in_yellow(tmp_path):
    grey = np.full((200, 200), 0.5, np.float32)
    kp = np.random.default_rng(0).uniform(10, 190, (50, 2))

    def yellow(inliers) -> int:
        out = plot_registration(grey, grey, None, kp, kp, inliers, tmp_path / "p.png")
        rgb = mpimg.imread(out)[..., :3]
        return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.3)).sum())

    assert yellow(np.ones(50, bool)) > 20
    assert yellow(np.zeros(50, bool)) == 0


def test_transform_entry_gives_where_the_centre_lands_and_the_georeferencing_shift():
    """Moving image 201 x 101 px: its centre (100, 50) lands at (110, 55) by the fit and at
    (107, 58) by the georeferencing; on a 2 m grid (north up) that is 3 px right and 3 px up,
    (6, 6) m, 8.49 m."""
    from sarreg.config import RegisterConfig

    matrix = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 5.0], [0.0, 0.0, 1.0]])
    fit = fit_of(matrix, rmse=0.1)

    def info(shape, transform):
        return raster_info(shape, transform, CRS.from_epsg(32633))

    ref = info((300, 300), Affine(2.0, 0.0, 1000.0, 0.0, -2.0, 5000.0))
    out = transform_entry(fit, RegisterConfig(), ref, info((101, 201), None),
                          lambda xy: xy + [7.0, 8.0])  # fmt: skip
    assert out["moving_centre_to_reference_px"] == [110.0, 55.0]
    shift = out["georeferencing_shift_at_centre"]
    assert shift["ref_px"] == [3.0, -3.0]
    assert shift["map_units"] == pytest.approx([6.0, 6.0])
    assert shift["map_distance"] == pytest.approx(np.hypot(6.0, 6.0))
    # the other way: the georeferencing puts the centre at (113, 52), 3 px right of and 3 px
    # above where it is
    out = transform_entry(fit, RegisterConfig(), ref, info((101, 201), None),
                          lambda xy: xy + [13.0, 2.0])  # fmt: skip
    shift = out["georeferencing_shift_at_centre"]
    assert shift["ref_px"] == [-3.0, 3.0]
    assert shift["map_units"] == pytest.approx([-6.0, -6.0])
    assert shift["map_distance"] == pytest.approx(np.hypot(6.0, 6.0))
    assert out["corrected_geotransform"] == pytest.approx([2.0, 0.0, 1020.0, 0.0, -2.0, 4990.0])


def test_display_pixel_centres_follow_the_decimation():
    """The centre of the 4 x 4 block of full-resolution pixels (8..11, 4..7) is display pixel
    (2, 1) at step 4; full-resolution pixel centres are display pixel centres at step 1."""
    xy = np.array([[9.5, 5.5], [0.0, 0.0], [7.0, 3.0]])
    assert _to_display_xy(xy, 4).tolist() == [[2.0, 1.0], [-0.375, -0.375], [1.375, 0.375]]
    assert _to_display_xy(xy, 1).tolist() == xy.tolist()


def test_side_by_side_puts_the_moving_image_right_of_the_reference():
    """A 30 x 100 reference and a 50 x 40 moving image: the panel is 50 rows (the taller),
    100 + 4 (gap) + 40 columns; moving keypoints move right by 104 columns."""
    ref, mov = np.full((30, 100), 0.25), np.full((50, 40), 0.75)
    kp = np.array([[0.0, 0.0], [39.0, 29.0]])
    pair, p_ref, p_mov, (ref_d, s_ref) = side_by_side(ref, mov, kp, kp)
    assert pair.shape == (50, 144) and s_ref == 1 and ref_d.shape == (30, 100)
    assert np.all(pair[:30, :100] == 0.25) and np.isnan(pair[30:, :100]).all()
    assert np.isnan(pair[:, 100:104]).all() and np.all(pair[:, 104:] == 0.75)
    assert p_ref.tolist() == kp.tolist()
    assert p_mov.tolist() == [[104.0, 0.0], [143.0, 29.0]]


@pytest.mark.parametrize("shape", [(20, 21), (20, 19), (19, 20)])
def test_plot_refuses_a_warped_image_off_the_reference_grid(tmp_path, shape):
    img = np.zeros((20, 20), np.float32)
    with pytest.raises(ValueError, match="differs from ref_img"):
        plot_registration(img, img, np.zeros(shape), np.zeros((0, 2)), np.zeros((0, 2)),
                          np.zeros(0, bool), tmp_path / "p.png")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_peak_memory_is_the_processes_high_water_mark_in_mib():
    """Against the kernel's other figure, ``VmHWM`` in /proc/self/status (KiB), read before
    and after: MiB, not KiB or bytes."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc on this system")

    def high_water_kib() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1])

    before = high_water_kib()
    peak = peak_memory_mb()
    after = high_water_kib()
    # the two counters are kept apart by the kernel and differ by up to ~0.1 %
    assert before / 1024.0 * 0.99 <= peak <= after / 1024.0 * 1.01


def test_image_entry_gives_the_six_geotransform_terms_or_none():
    from sarreg.report import ImageEntry

    raster = work_raster(2.0, shape=(4, 4), path="a.tif")
    t = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    for transform, expected in ((t, [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0]), (None, None)):
        info = raster_info((8, 8), transform, path="a.tif")
        out = ImageEntry("a.tif", info, raster, 12).to_dict()
        assert out["geotransform"] == expected
        assert (out["shape"], out["work_decimation"], out["keypoints"]) == ([8, 8], 2.0, 12)


def test_tie_point_entries_give_map_positions_where_an_image_is_georeferenced():
    from sarreg.estimate import TiePoints
    from sarreg.report import tie_point_entries

    xy = np.array([[0.0, 0.0], [10.0, 20.0]])
    tie = TiePoints(xy + 1.0, xy, np.array([0.9, 0.8]), np.ones(2), np.ones(2), np.array([-1, 3]))
    fit = fit_of(np.eye(3), [True, False], [0.1, 5.0])
    t = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0)
    both = tie_point_entries(tie, fit, np.array([0]), t, t)
    assert both[1]["mov_map"] == [1105.0, 4795.0] and both[1]["ref_map"] == [1115.0, 4785.0]
    assert [e["gcp"] for e in both] == [True, False] and [e["tile"] for e in both] == [-1, 3]
    assert [e["inlier"] for e in both] == [True, False] and both[1]["residual_px"] == 5.0
    plain = tie_point_entries(tie, fit, None, t, None)
    assert "mov_map" not in plain[0] and plain[0]["ref_map"] == [1015.0, 4985.0]
    assert not any(e["gcp"] for e in plain)


def test_figure_shows_exactly_the_panel_with_the_inliers_keypoints_on_it():
    """A 30 x 100 reference and a 50 x 40 moving image: the left axes span the 50 x 144 px
    panel edge to edge (y down), and the yellow dots sit on the drawn inliers' keypoints,
    the moving ones 104 px right."""
    from sarreg.report import registration_figure

    ref, mov = np.full((30, 100), 0.25), np.full((50, 40), 0.75)
    kp_ref = np.array([[10.0, 5.0], [90.0, 25.0], [50.0, 10.0]])
    kp_mov = np.array([[1.0, 2.0], [39.0, 49.0], [20.0, 20.0]])
    fig = registration_figure(ref, mov, None, kp_ref, kp_mov, [True, True, False])
    ax = fig.axes[0]
    assert ax.get_xlim() == (-0.5, 143.5) and ax.get_ylim() == (49.5, -0.5)
    dots = ax.collections[-1].get_offsets()
    expected = np.r_[kp_ref[:2], kp_mov[:2] + [104.0, 0.0]]
    np.testing.assert_allclose(np.asarray(dots), expected)


def test_to_jsonable_of_enums_dates_and_look_alikes():
    import datetime
    import enum

    class Level(enum.Enum):
        low = 1

    class GdalLike:  # has to_gdal, but is not an Affine
        def to_gdal(self):
            return (0.0,) * 6

        def __str__(self):
            return "gdal-like"

    out = to_jsonable([Level.low, datetime.date(2026, 12, 2), GdalLike()])
    assert out == [1, "2026-12-02", "gdal-like"]


def test_display_fits_the_default_display_size():
    assert _display(np.zeros((2048, 10)))[1] == 1
    assert _display(np.zeros((2049, 10)))[1] == 2


def test_checkerboard_of_one_tile_is_the_first_image_and_shapes_must_agree():
    a, b = np.zeros((6, 4)), np.ones((6, 4))
    assert np.array_equal(checkerboard(a, b, 1), a)
    with pytest.raises(ValueError, match="tiles must be >= 1"):
        checkerboard(a, b, 0)
    with pytest.raises(ValueError, match="of one shape"):
        checkerboard(a, np.ones((6, 5)))
    with pytest.raises(ValueError, match="of one shape"):
        checkerboard(np.zeros(6), np.ones(6))


def test_transform_entry_centre_of_an_even_sized_moving_image():
    """A 200 x 100 moving image's centre is pixel centre (99.5, 49.5)."""
    from sarreg.config import RegisterConfig

    fit = fit_of(np.eye(3), rmse=0.1)
    info = raster_info((100, 200), path="m.tif")
    out = transform_entry(fit, RegisterConfig(), info, info, None)
    assert out["moving_centre_to_reference_px"] == [99.5, 49.5]
