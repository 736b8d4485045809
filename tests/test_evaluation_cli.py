"""`sarreg evaluate` on a tiny benchmark, and the runner's handling of bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import rasterio

from sarreg.cli import main
from sarreg.errors import BenchmarkError
from sarreg.evaluation.bench import read_benchmark
from sarreg.evaluation.methods import KeypointSet, Method, OpenCVMethod
from sarreg.evaluation.run import RunConfig, run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def bench(data_dir, tmp_path_factory):
    """Two medium pairs: one multi-date OPERA pair, one S1 single-image pair."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    code = main(
        [
            "evaluate", "synth", "--images", str(data_dir / "opera_rtc_s1"),
            "--images", str(data_dir / "s1_vv_grd_db.tif"), "--out", str(out), "--n", "2",
            "--seed", "3", "--crop", "256",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def _copy(bench, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bench, dst)
    return dst


def test_cli_runs_all_methods(bench, tmp_path, capsys):
    out = tmp_path / "res"
    code = main(
        ["evaluate", "run", str(bench), "--out", str(out), "-m", "sarreg,sift,orb",
         "-m", "sarsift", "-m", "phasecorr", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "| sarreg |" in text and "| SAR-SIFT |" in text and "| phase correlation |" in text
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["sarreg", "sift", "orb", "sarsift", "phasecorr"]
    assert rows[-1]["mma@3"] == ""  # not applicable to phase correlation
    assert 0.0 <= float(rows[0]["mma@3"]) <= 1.0
    sarreg = rows[0]
    assert float(sarreg["success@5"]) == 1.0  # medium pairs are easy for the bundled model
    records = json.loads((out / "pairs.json").read_text())["records"]
    assert len(records) == 2 * 5
    assert all(len(r["mma"]) == 10 for r in records if r["method"] != "phasecorr")
    assert (out / "mma.png").stat().st_size > 1000
    assert (out / "results.md").read_text().startswith("| method |")
    by_sensor = (out / "results_by_sensor.md").read_text()
    assert "| Sentinel-1 C-band (OPERA RTC) | sarreg | 1 |" in by_sensor


def test_cli_unknown_method(bench, capsys):
    code = main(["evaluate", "run", str(bench), "-m", "surf", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 12
    assert "unknown method 'surf'" in err and "sarsift" in err and "phasecorr" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_missing_file_and_skip_invalid(bench, tmp_path, capsys):
    b = _copy(bench, tmp_path)
    (b / "pair_0001_mov.tif").unlink()
    code = main(["evaluate", "run", str(b), "-m", "orb", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 16
    assert "pair_0001: moving image not found" in err and "--skip-invalid" in err
    code = main(["evaluate", "run", str(b), "-m", "orb", "--skip-invalid", "--no-progress"])
    assert code == 0
    assert "1 pair(s) left out" in capsys.readouterr().out


def test_wrong_ground_truth_shape(bench, tmp_path):
    b = _copy(bench, tmp_path)
    f = b / "pair_0000.json"
    d = json.loads(f.read_text())
    d["matrix"] = d["matrix"][:2]
    f.write_text(json.dumps(d))
    with pytest.raises(BenchmarkError, match=r"shape \(2, 3\), expected \(3, 3\)"):
        read_benchmark(b)


def test_dense_displacement_and_csv_index(bench, tmp_path):
    """The same pair with its truth as a dense displacement GeoTIFF, listed in a CSV, scores
    as with the matrix; a field of the wrong shape is refused."""
    from sarreg.geometry import apply_matrix

    pair = read_benchmark(bench)[1]
    with rasterio.open(pair.moving) as ds:
        h, w = ds.height, ds.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xy = np.stack([xs.ravel(), ys.ravel()], 1)
    d = (apply_matrix(pair.matrix, xy) - xy).reshape(h, w, 2).transpose(2, 0, 1)
    prof = dict(driver="GTiff", height=h, width=w, count=2, dtype="float32")
    with rasterio.open(tmp_path / "gt.tif", "w", **prof) as ds:
        ds.write(d.astype(np.float32))
    with rasterio.open(tmp_path / "bad.tif", "w", **{**prof, "count": 1}) as ds:
        ds.write(d[:1].astype(np.float32))
    m = " ".join(f"{v:.12g}" for v in pair.matrix.ravel())
    (tmp_path / "index.csv").write_text(
        "name,reference,moving,matrix,displacement,sensor\n"
        f"dense,{pair.reference},{pair.moving},,gt.tif,s1\n"
        f"matrix,{pair.reference},{pair.moving},{m},,s1\n"
    )
    res = run_benchmark(tmp_path / "index.csv", RunConfig(methods=("sarsift",)))
    by = {r["pair"]: r for r in res.records}
    assert by["dense"]["tags"] == {"sensor": "s1"}
    assert by["dense"]["rmse"] == pytest.approx(by["matrix"]["rmse"], abs=0.05)
    assert np.allclose(by["dense"]["mma"], by["matrix"]["mma"], atol=0.01)
    (tmp_path / "bad.csv").write_text(
        f"name,reference,moving,displacement\nbad,{pair.reference},{pair.moving},bad.tif\n"
    )
    with pytest.raises(BenchmarkError, match="expected"):
        run_benchmark(tmp_path / "bad.csv", RunConfig(methods=("orb",)))


class _Blind(Method):
    """A method that never finds a keypoint."""

    name = "blind"
    label = "blind"

    def describe(self, img):
        return KeypointSet(np.zeros((0, 2)), np.zeros((0, 8), np.float32))


def test_method_without_matches_is_a_failure_and_the_run_goes_on(bench, monkeypatch):
    monkeypatch.setattr(
        "sarreg.evaluation.run.make_methods", lambda names, k: [_Blind(), OpenCVMethod("orb")]
    )
    res = run_benchmark(bench, RunConfig(methods=("blind", "orb")))
    blind = [r for r in res.records if r["method"] == "blind"]
    assert len(blind) == 2 and all(r["status"].startswith("failed") for r in blind)
    assert all(np.isinf(r["rmse"]) for r in blind)
    row = {r["method"]: r for r in res.summary}
    assert row["blind"]["failures"] == 2 and row["blind"]["success@5"] == 0.0
    assert row["blind"]["mma@3"] == 0.0
    assert row["orb"]["pairs"] == 2


def test_naver_checkpoint_as_a_method(bench, tmp_path):
    """`sarreg:PATH` takes a checkpoint in the R2D2 authors' format (converted on load)."""
    import torch
    from test_checkpoint import _fake_naver

    path = tmp_path / "faster2d2_WASF_N16.pt"
    torch.save(_fake_naver("faster2d2_WASF_N16"), path)
    index = tmp_path / "one.yaml"  # one pair, listed in a YAML index
    index.write_text(f"pairs:\n  - {json.dumps(read_benchmark(bench)[1].to_json(bench))}\n")
    (tmp_path / "pair_0001_ref.tif").symlink_to(bench / "pair_0001_ref.tif")
    (tmp_path / "pair_0001_mov.tif").symlink_to(bench / "pair_0001_mov.tif")
    res = run_benchmark(index, RunConfig(methods=(f"sarreg:{path}",), max_keypoints=300))
    assert [r["label"] for r in res.records] == ["sarreg (faster2d2_WASF_N16.pt)"]
    assert all(r["keypoints_ref"] > 0 for r in res.records)  # random weights: no accuracy
