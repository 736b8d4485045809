"""``sarreg batch``: a real 2-worker LocalCluster batch with a bad scene, resume, bad inputs."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Polygon

from sarreg.batch import (
    SUMMARY_CSV,
    SUMMARY_GEOJSON,
    BatchSettings,
    fingerprint,
    plan_jobs,
    previous_result,
    result_settings,
    run_batch,
)
from sarreg.cli import main
from sarreg.config import EstimateConfig, InputConfig, with_values
from sarreg.errors import ClusterError, ConfigError
from sarreg.geometry import similarity_about_centre
from sarreg.pipeline import RegisterConfig, register

SIZE = 512
#: Small, fast registrations (about a second each on 2 idle cores): 256 px reads, one scale.
CONFIG = RegisterConfig(
    input=InputConfig(max_size=256), estimate=EstimateConfig(georef_scales=(1.0,))
)
WARPS = [(3.0, 1.02, (5.0, -3.0)), (-4.0, 0.97, (-7.0, 4.0)), (2.0, 1.04, (8.0, 6.0))]


def _write(path: Path, profile: dict, data: np.ndarray, transform: Affine) -> Path:
    profile = dict(profile, width=data.shape[1], height=data.shape[0], count=1)
    profile.update(transform=transform, tiled=False, dtype=str(data.dtype))
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, data_dir):
    """A 512 x 512 Umbra reference, three copies warped by known affines (with the reference's
    geotransform, so their georeferencing is off by the warp) and a corrupt scene among them."""
    folder = tmp_path_factory.mktemp("scenes")
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        win = Window(700, 700, SIZE, SIZE)
        ref = ds.read(1, window=win)
        transform = ds.window_transform(win)
        profile = ds.profile
    ref_path = _write(folder / "ref.tif", profile, ref, transform)
    movs = []
    for i, (deg, scale, shift) in enumerate(WARPS):
        w = similarity_about_centre(ref.shape, deg, scale, shift)
        mov = cv2.warpAffine(ref, w[:2], (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        movs.append(_write(folder / f"scene{2 * i}.tif", profile, mov, transform))
    bad = folder / "scene1.tif"  # sorts between the good ones
    bad.write_bytes(b"II*\x00" + b"not a tiff " * 20)
    far = transform @ Affine.translation(100 * SIZE, 0)  # same CRS, 50 km away
    far_path = _write(folder / "elsewhere.tif", profile, ref, far)
    return {"ref": ref_path, "good": movs, "bad": bad, "far": far_path, "folder": folder}


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_line_error(capsys, code: int, expected: int, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected, err
    assert err and err[-1].startswith("sarreg: error: ")
    for word in words:
        assert word in err[-1]
    return err[-1]


def test_batch_on_local_cluster_matches_single_runs_and_resumes(scenes, tmp_path):
    out = tmp_path / "out"
    jobs = plan_jobs(out, reference=scenes["ref"], moving=[str(scenes["folder"] / "scene*.tif")])
    assert [j.name for j in jobs] == ["scene0", "scene1", "scene2", "scene4"]
    settings = BatchSettings(workers=2, threads_per_worker=1, progress=False)
    summary = run_batch(jobs, CONFIG, out, settings)

    status = {r.name: r.status for r in summary.results}
    assert status == {"scene0": "ok", "scene1": "failed", "scene2": "ok", "scene4": "ok"}
    bad = summary.results[1]
    assert bad.error == "InputFileError" and bad.exit_code == 3 and "scene1.tif" in bad.message
    assert not (out / "scene1.tif").exists() and not (out / "scene1.json").exists()
    assert json.loads((out / "scene1.batch.json").read_text())["retry"] is False
    # each worker process loaded the model once, however many scenes it ran
    loads = {r.worker: r.model_loads for r in summary.results}
    assert 1 <= len(loads) <= 2 and set(loads.values()) == {1}

    # the outputs are those of single `register` runs with the same settings
    single = tmp_path / "single"
    single.mkdir()
    for r in summary.results:
        if r.status != "ok":
            continue
        ref_out = single / f"{r.name}.tif"
        res = register(scenes["ref"], r.moving, ref_out, CONFIG)
        assert Path(r.output).read_bytes() == ref_out.read_bytes()
        assert r.inliers == res.n_inliers and r.rmse_px == pytest.approx(res.rmse)

    rows = _read_csv(out / SUMMARY_CSV)
    assert [row["status"] for row in rows] == ["ok", "failed", "ok", "ok"]
    assert rows[1]["error"] == "InputFileError" and rows[1]["message"]
    assert all(float(row["seconds"]) > 0 for row in rows)
    geo = json.loads((out / SUMMARY_GEOJSON).read_text())
    assert len(geo["features"]) == 4
    for feature, row in zip(geo["features"], rows, strict=True):
        assert feature["properties"]["status"] == row["status"]
        assert feature["properties"]["footprint_crs"] == "EPSG:4326"
    ring = np.array(geo["features"][0]["geometry"]["coordinates"][0])
    assert Polygon(ring).exterior.is_ccw  # RFC 7946
    lon, lat = ring.mean(axis=0)
    assert 169.3 < lon < 169.6 and -19.7 < lat < -19.4  # Mount Yasur, Tanna, Vanuatu
    assert geo["features"][1]["geometry"] is None  # unreadable scene: no footprint

    # a second run does no work: finished scenes are skipped, the bad one is not retried
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    t0 = time.perf_counter()
    again = run_batch(jobs, CONFIG, out, settings)
    assert time.perf_counter() - t0 < 5.0  # no cluster started
    assert [r.status for r in again.results] == ["skipped", "failed", "skipped", "skipped"]
    assert not any(r.this_run for r in again.results)
    assert again.results[0].inliers == summary.results[0].inliers
    for p in out.iterdir():
        if not p.name.startswith("batch_summary"):
            assert p.stat().st_mtime_ns == mtimes[p.name], p.name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files
    # an output changed since is redone
    job0, fp0 = jobs[0], again.results[0].fingerprint
    assert previous_result(job0, fp0) is not None
    with open(job0.output, "ab") as f:
        f.write(b"\0")
    assert previous_result(job0, fp0) is None


def test_cli_pairs_csv_in_process_records_failures(scenes, tmp_path, capsys):
    """Non-overlapping and missing scenes in a CSV batch (--workers 0): recorded, exit 18."""
    pairs = tmp_path / "pairs.csv"
    rel_ref = os.path.relpath(scenes["ref"], tmp_path)
    pairs.write_text(
        "Reference,Moving,Output\n"
        f"{rel_ref},{scenes['far']},far.tif\n"
        f"{scenes['ref']},{tmp_path / 'missing.tif'},\n"
    )
    out = tmp_path / "out"
    code = main(["batch", "--pairs", str(pairs), "-o", str(out), "--workers", "0"])
    _one_line_error(capsys, code, 18, "2 of 2 scenes failed", SUMMARY_CSV)
    rows = _read_csv(out / SUMMARY_CSV)
    assert [(r["name"], r["error"], r["exit_code"]) for r in rows] == [
        ("far", "NoOverlapError", "5"),
        ("missing", "InputFileError", "3"),
    ]
    geo = json.loads((out / SUMMARY_GEOJSON).read_text())
    far = geo["features"][0]
    assert far["properties"]["footprint_source"] == "georeferencing"
    assert far["geometry"]["type"] == "Polygon"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SUMMARY_CSV, SUMMARY_GEOJSON, "far.batch.json", "missing.batch.json"]
    )


def test_failed_write_leaves_nothing_half_written(scenes, tmp_path, monkeypatch):
    import sarreg.report

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sarreg.report, "write_report", broken)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".scene0.tif.sarreg-0a1b2c3d.tif").write_bytes(b"left by a killed run")
    jobs = plan_jobs(out, reference=scenes["ref"], moving=[str(scenes["good"][0])])
    summary = run_batch(jobs, CONFIG, out, BatchSettings(workers=0, progress=False))
    (result,) = summary.results
    assert result.status == "failed" and "disk full" in result.message
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SUMMARY_CSV, SUMMARY_GEOJSON, "scene0.batch.json"]
    )
    record = json.loads((out / "scene0.batch.json").read_text())
    assert record["status"] == "failed" and record["error"] == "OSError"
    assert record["retry"] is True  # not a problem of the inputs: the next run retries it


def test_fingerprint_follows_inputs_and_settings(scenes, tmp_path):
    (job,) = plan_jobs(tmp_path, reference=scenes["ref"], moving=[str(scenes["good"][0])])
    base = fingerprint(job, result_settings(CONFIG), "abc")
    assert base == fingerprint(job, result_settings(CONFIG), "abc")
    unrelated = with_values(
        CONFIG,
        {"output.overwrite": True, "progress": True, "output.report": "x.json",
         "output.plot": "p.png"},
    )  # fmt: skip
    assert fingerprint(job, result_settings(unrelated), "abc") == base
    assert (
        fingerprint(job, result_settings(with_values(CONFIG, {"estimate.seed": 1})), "abc") != base
    )
    assert fingerprint(job, result_settings(CONFIG), "abd") != base
    copy = tmp_path / "copy.tif"
    copy.write_bytes(Path(job.moving).read_bytes())
    (moved,) = plan_jobs(tmp_path / "out", reference=scenes["ref"], moving=[str(copy)])
    assert fingerprint(moved, result_settings(CONFIG), "abc") != base


def test_unreachable_scheduler_fails_fast(scenes, tmp_path):
    import socket

    with socket.socket() as s:  # a free port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    jobs = plan_jobs(out, reference=scenes["ref"], moving=[str(scenes["good"][0])])
    settings = BatchSettings(scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1.0)
    t0 = time.perf_counter()
    with pytest.raises(ClusterError) as info:
        run_batch(jobs, CONFIG, out, settings)
    assert time.perf_counter() - t0 < 15.0
    assert info.value.exit_code == 17
    assert f"127.0.0.1:{port}" in str(info.value) and "\n" not in str(info.value)
    assert list(out.iterdir()) == []


def test_cli_csv_missing_columns(scenes, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"ref,moving\n{scenes['ref']},{scenes['good'][0]}\n")
    out = tmp_path / "out"
    code = main(["batch", "--pairs", str(pairs), "-o", str(out)])
    _one_line_error(capsys, code, 12, "reference", "column")
    assert not out.exists()


def test_cli_no_scene_matches(scenes, tmp_path, capsys):
    code = main(["batch", "-r", str(scenes["ref"]), str(tmp_path / "*.tif"), "-o", str(tmp_path)])
    _one_line_error(capsys, code, 3, "no moving scene", "*.tif")


def test_cli_missing_reference(scenes, tmp_path, capsys):
    args = ["batch", "-r", str(tmp_path / "nope.tif"), str(scenes["good"][0]), "-o", str(tmp_path)]
    _one_line_error(capsys, main(args), 3, "nope.tif")


def test_cli_output_folder_not_writable(scenes, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(
        ["batch", "-r", str(scenes["ref"]), str(scenes["good"][0]), "-o", str(blocker / "out")]
    )
    _one_line_error(capsys, code, 9, "output folder")


def test_plan_rejects_colliding_outputs_and_mixed_inputs(scenes, tmp_path):
    other = tmp_path / "sub"
    other.mkdir()
    (other / "scene0.tif").write_bytes(scenes["good"][0].read_bytes())
    with pytest.raises(ConfigError, match="same output"):
        plan_jobs(
            tmp_path / "out",
            reference=scenes["ref"],
            moving=[str(scenes["good"][0]), str(other / "scene0.tif")],
        )
    with pytest.raises(ConfigError, match="overwrite its input"):
        plan_jobs(scenes["folder"], reference=scenes["ref"], moving=[str(scenes["good"][0])])
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"reference,moving,output\n{scenes['ref']},{scenes['good'][0]},../x.tif\n")
    with pytest.raises(ConfigError, match="plain file name"):
        plan_jobs(tmp_path / "out", pairs_csv=pairs)
    with pytest.raises(ConfigError, match="not both"):
        plan_jobs(tmp_path, reference=scenes["ref"], pairs_csv=tmp_path / "p.csv")
    # the reference itself is left out of a glob; a repeated scene runs once
    jobs = plan_jobs(
        tmp_path / "out",
        reference=scenes["ref"],
        moving=[str(scenes["folder"] / "ref*.tif"), str(scenes["good"][0])] * 2,
    )
    assert [j.name for j in jobs] == ["scene0"]


def test_batch_takes_every_registration_option():
    """Every option of `sarreg register` that is not about one scene's outputs is a batch
    option too (one table: sarreg.cli.options.OPTIONS)."""
    import inspect

    from sarreg.cli.batch import batch_cmd
    from sarreg.cli.register import register_cmd

    per_scene = {"reference", "moving", "output", "report", "plot", "overwrite", "gcps", "shifts"}
    shared = set(inspect.signature(register_cmd).parameters) - per_scene
    assert shared <= set(inspect.signature(batch_cmd).parameters)
