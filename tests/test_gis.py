"""GIS outputs of `sarreg register`: COG, GeoPackage tie points, shift raster, quality map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from sarreg import gis
from sarreg.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, data_dir):
    """The demo pair registered once with every GIS output."""
    out = tmp_path_factory.mktemp("gis")
    paths = {
        "out": out / "aligned.tif",
        "gpkg": out / "tie_points.gpkg",
        "shifts": out / "shifts.tif",
        "plot": out / "matches.png",
    }
    demo = data_dir / "demo"
    code = main(
        [
            "register", str(demo / "reference.tif"), str(demo / "moving.tif"),
            "-o", str(paths["out"]), "--cog", "--gcps", str(paths["gpkg"]),
            "--shifts", str(paths["shifts"]), "--plot", str(paths["plot"]), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    paths["report"] = json.loads((out / "aligned.json").read_text())
    paths["reference"] = demo / "reference.tif"
    return paths


def test_cog_output_is_tiled_with_overviews_on_the_reference_grid(demo_run):
    with rasterio.open(demo_run["reference"]) as ref, rasterio.open(demo_run["out"]) as out:
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert out.profile["tiled"] and out.block_shapes[0] == (256, 256)
        assert out.overviews(1), "no internal overviews"
        assert out.crs == ref.crs and out.transform == ref.transform
        assert (out.width, out.height) == (ref.width, ref.height)
        assert "SARREG_REGISTRATION" in out.tags()
        assert np.isfinite(out.read(1)).mean() > 0.3
    # overviews are internal: no .ovr sidecar
    assert not demo_run["out"].with_name(demo_run["out"].name + ".ovr").exists()


def test_geopackage_layer_reads_back_with_crs_and_fields(demo_run):
    import fiona

    from sarreg.tiepoints import LAYER

    report = demo_run["report"]
    assert fiona.listlayers(demo_run["gpkg"]) == [LAYER]
    with (
        fiona.open(demo_run["gpkg"], layer=LAYER) as layer,
        rasterio.open(demo_run["reference"]) as ref,
    ):
        assert rasterio.crs.CRS.from_user_input(layer.crs.to_wkt()) == ref.crs
        props = layer.schema["properties"]
        for key in ("residual_px", "similarity", "inlier", "ref_x", "mov_x", "gcp"):
            assert key in props
        feats = list(layer)
    tps = report["tie_points"]
    assert len(feats) == len(tps)
    first = feats[0]
    assert first.geometry["coordinates"] == pytest.approx(tuple(tps[0]["ref_map"]))
    assert first.properties["residual_px"] == pytest.approx(tps[0]["residual_px"])
    assert first.properties["similarity"] == pytest.approx(tps[0]["similarity"])
    assert sum(bool(f.properties["inlier"]) for f in feats) == report["inliers"]


def test_shift_raster_holds_the_models_displacements(demo_run):
    report = demo_run["report"]
    m = np.array(report["transform"]["pixel_matrix"])
    inv = np.linalg.inv(m)
    with rasterio.open(demo_run["shifts"]) as sh, rasterio.open(demo_run["reference"]) as ref:
        cell = gis.SHIFT_CELL
        assert sh.count == 2 and sh.crs == ref.crs
        assert sh.transform == ref.transform @ Affine.scale(cell)
        assert sh.descriptions == ("dx_px", "dy_px")
        assert (sh.height, sh.width) == (-(-ref.height // cell), -(-ref.width // cell))
        dx, dy = sh.read(1), sh.read(2)
    r, c = 3, 5
    p = np.array([c * cell + (cell - 1) / 2, r * cell + (cell - 1) / 2, 1.0])
    q = inv @ p
    q = q[:2] / q[2]
    assert dx[r, c] == pytest.approx(q[0] - p[0], abs=1e-3)
    assert dy[r, c] == pytest.approx(q[1] - p[1], abs=1e-3)
    # the demo's known warp moves content by several pixels: the field is not zero
    assert np.abs(dx).max() > 1.0


def test_quality_map_written_with_the_plot(demo_run):
    q = demo_run["plot"].with_name("matches_quality.png")
    assert q.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shift_field_against_a_known_translation():
    dx, dy, centres = gis.shift_field((100, 70), lambda xy: xy + [2.5, -1.0], cell=32)
    assert dx.shape == (4, 3) and np.allclose(dx, 2.5) and np.allclose(dy, -1.0)
    assert centres[0, 0].tolist() == [15.5, 15.5]


def test_new_outputs_are_checked_before_work(tmp_path, data_dir, capsys):
    demo = data_dir / "demo"
    taken = tmp_path / "shifts.tif"
    taken.write_text("keep me")
    args = ["register", str(demo / "reference.tif"), str(demo / "moving.tif"),
            "-o", str(tmp_path / "a.tif"), "--no-progress"]  # fmt: skip
    assert main([*args, "--shifts", str(taken)]) == 10
    assert taken.read_text() == "keep me" and not (tmp_path / "a.tif").exists()
    (tmp_path / "m_quality.png").write_text("keep")
    assert main([*args, "--plot", str(tmp_path / "m.png")]) == 10
    assert not (tmp_path / "a.tif").exists()
    assert main([*args, "--shifts", str(tmp_path / "shifts.png")]) == 12
    capsys.readouterr()


def test_failed_later_output_removes_the_shift_raster(tmp_path, data_dir, monkeypatch):
    from sarreg import report as report_mod
    from sarreg.config import OutputConfig
    from sarreg.pipeline import RegisterConfig, register

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report_mod, "plot_registration", broken)
    demo = data_dir / "demo"
    cfg = RegisterConfig(
        output=OutputConfig(shifts=str(tmp_path / "s.tif"), plot=str(tmp_path / "m.png"), cog=True)
    )
    with pytest.raises(OSError, match="disk full"):
        register(demo / "reference.tif", demo / "moving.tif", tmp_path / "a.tif", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_verification_result_of_the_report_joins_the_layer(demo_run, tmp_path):
    import copy

    import fiona

    from sarreg.tiepoints import LAYER, to_csv, write_tie_points

    report = copy.deepcopy(demo_run["report"])
    for i, tp in enumerate(report["tie_points"]):
        tp["verification"] = "agrees" if i % 2 == 0 else "disagrees"
    write_tie_points(report, tmp_path / "v.gpkg")
    with fiona.open(tmp_path / "v.gpkg", layer=LAYER) as layer:
        values = [f.properties["verification"] for f in layer]
    assert values[:2] == ["agrees", "disagrees"]
    assert to_csv(report).splitlines()[0].endswith(",verification")
    assert "verification" not in to_csv(demo_run["report"]).splitlines()[0]
