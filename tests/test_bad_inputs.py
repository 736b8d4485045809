"""Bad and hostile inputs through the CLI, table-driven.

Each case runs ``sarreg.cli.main`` in-process on small files and asserts the documented exit
code (README's error table), a one-line ``sarreg: error:`` message without a traceback, every
input file unchanged (SHA-256 before and after) and nothing left in the output folder (no
output, no hidden temporary file). Signals need a real process: the SIGTERM/SIGHUP tests and
the memory-limited checkpoint test run ``python -m sarreg`` as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sarreg.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
BUNDLED = ROOT / "sarreg" / "weights" / "fast_r2d2_sar.pt"


# ------------------------------------------------------------------------------ input files


def _write(path: Path, profile: dict, data: np.ndarray, **changes) -> Path:
    prof = dict(profile)
    prof.update(changes)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


def _craft_checkpoint(path: Path, **config) -> Path:
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    ck["config"] = {**ck["config"], **config}
    torch.save(ck, path)
    return path


class _Evil:
    """Pickles as a call of ``os.system``: loading it must not run anything."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/sarreg_pwned_by_test",))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of small inputs, good and bad (never written by the cases)."""
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(DEMO / "reference.tif", d / "ref.tif")
    shutil.copy(DEMO / "moving.tif", d / "mov.tif")
    with rasterio.open(d / "mov.tif") as src:
        data, profile = src.read(1), src.profile
    _write(d / "const.tif", profile, np.full_like(data, 0.05))
    _write(d / "allnan.tif", profile, np.full_like(data, np.nan))
    _write(d / "far.tif", profile, data,
           transform=profile["transform"] @ profile["transform"].translation(50000, 0))  # fmt: skip
    _write(d / "badcrs.tif", profile, data, crs="EPSG:4326")
    _write(d / "nogeo.tif", {k: v for k, v in profile.items() if k not in ("crs", "transform")},
           data)  # fmt: skip
    noise = np.random.default_rng(0).gamma(1.0, 0.05, data.shape).astype(np.float32)
    _write(d / "noise.tif", profile, noise)
    (d / "text.tif").write_text("this is not a raster\n")
    raw = (d / "mov.tif").read_bytes()
    (d / "trunc.tif").write_bytes(raw[: len(raw) // 3])
    (d / "empty.tif").write_bytes(b"")
    # checkpoints
    torch.save({"format": "sarreg-checkpoint", "payload": _Evil()}, d / "evil.pt")
    (d / "text.pt").write_text("not a checkpoint")
    (d / "trunc.pt").write_bytes(BUNDLED.read_bytes()[:30000])
    _craft_checkpoint(d / "mchan150.pt", mchan=150)
    _craft_checkpoint(d / "mchan100000.pt", mchan=100000)
    _craft_checkpoint(d / "mchan16.pt", mchan=16)  # in bounds, weights of another width
    _craft_checkpoint(d / "dim0.pt", dim=0)
    _craft_checkpoint(d / "arch.pt", arch="resnet")
    _craft_checkpoint(d / "inch.pt", in_channels=7)
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, d / "future.pt")
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    ck["state_dict"]["blocks.0.conv.weight"] = torch.zeros(1000, 1, 3, 3)
    torch.save(ck, d / "shape.pt")
    torch.save({"hello": 1}, d / "foreign.pt")
    # lists
    (d / "pairs_nocols.csv").write_text("a,b\nref.tif,mov.tif\n")
    (d / "bench").mkdir()
    return d


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    """One bad input: CLI arguments (``{i}`` = inputs folder, ``{o}`` = output folder), the
    exit code, words the message must contain and an optional setup of the output folder."""

    id: str
    args: str
    code: int
    words: tuple[str, ...] = ()
    setup: Callable[[Path, Path], None] | None = field(default=None, compare=False)


def _existing_output(i: Path, o: Path) -> None:
    (o / "out.tif").write_bytes(b"old output, kept byte for byte")


def _hard_link(i: Path, o: Path) -> None:
    os.link(i / "mov.tif", o / "hard.tif")


def _symlink_out(i: Path, o: Path) -> None:
    os.symlink(i / "text.pt", o / "link.tif")


def _input_in_benchmark(i: Path, o: Path) -> None:
    shutil.copy(i / "ref.tif", o / "pair_0000_ref.tif")


def _file_as_out_dir(i: Path, o: Path) -> None:
    (o / "run").write_text("a file, not a folder")


def _pairs_into_inputs(i: Path, o: Path) -> None:
    (o / "pairs.csv").write_text(f"reference,moving,output\n{i}/ref.tif,{i}/mov.tif,mov.tif\n")


def _pairs_dup(i: Path, o: Path) -> None:
    (o / "pairs.csv").write_text(
        f"reference,moving,output\n{i}/ref.tif,{i}/mov.tif,a.tif\n{i}/ref.tif,{i}/noise.tif,a.tif\n"
    )


def _fifo(i: Path, o: Path) -> None:
    os.mkfifo(o / "fifo.tif")


R = "register {i}/ref.tif {i}/mov.tif"
CASES = [
    Case(
        "convert-onto-itself",
        "models convert {i}/text.pt {i}/text.pt --overwrite",
        12,
        ("text.pt",),
    ),
    Case(
        "benchmark-over-its-images",
        "evaluate synth --images {o}/pair_0000_ref.tif --out {o} --n 1 --overwrite",
        12,
        ("pair_0000_ref.tif",),
        setup=_input_in_benchmark,
    ),
    # ---- inputs (3, 4, 5, 6, 11)
    Case("missing-reference", "register {i}/nope.tif {i}/mov.tif -o {o}/out.tif", 3, ("nope.tif",)),
    Case("missing-moving", "register {i}/ref.tif {i}/nope.tif -o {o}/out.tif", 3, ("nope.tif",)),
    Case("text-as-raster", "register {i}/ref.tif {i}/text.tif -o {o}/out.tif", 3, ("text.tif",)),
    Case("empty-file", "register {i}/ref.tif {i}/empty.tif -o {o}/out.tif", 3, ("empty.tif",)),
    Case("truncated-tif", "register {i}/ref.tif {i}/trunc.tif -o {o}/out.tif", 3, ("trunc.tif",)),
    Case("folder-as-input", "register {i}/ref.tif {i}/bench -o {o}/out.tif", 3, ("bench",)),
    Case("band-out-of-range", R + " -o {o}/out.tif --band-mov 5", 4, ("band",)),
    Case("band-zero", R + " -o {o}/out.tif --band-ref 0", 4, ("band",)),
    Case("no-overlap", "register {i}/ref.tif {i}/far.tif -o {o}/out.tif", 5, ("overlap",)),
    Case("all-nodata", "register {i}/ref.tif {i}/allnan.tif -o {o}/out.tif", 6, ("allnan.tif",)),
    Case(
        "constant",
        "register {i}/ref.tif {i}/const.tif -o {o}/out.tif",
        6,
        ("const.tif", "no contrast"),
    ),  # fmt: skip
    Case(
        "crs-does-not-fit",
        "register {i}/mov.tif {i}/badcrs.tif -o {o}/out.tif",
        11,
        ("do not fit", "EPSG:4326"),
    ),  # fmt: skip
    Case(
        "georef-mode-needs-georef",
        "register {i}/nogeo.tif {i}/mov.tif -o {o}/out.tif --mode georef",
        11,
        ("nogeo.tif",),
    ),  # fmt: skip
    Case(
        "geojson-needs-georef",
        "register {i}/nogeo.tif {i}/mov.tif -o {o}/out.tif --gcps {o}/tp.geojson",
        11,
        ("GeoJSON",),
    ),  # fmt: skip
    # ---- options (12)
    Case("bad-transform", R + " -o {o}/out.tif --transform shear", 12, ("shear",)),
    Case("bad-mode", R + " -o {o}/out.tif --mode warp", 12, ("warp",)),
    Case("bad-resampling", R + " -o {o}/out.tif --resampling lanczos9", 12, ("lanczos9",)),
    Case("bad-kind", R + " -o {o}/out.tif --kind-mov sigma", 12, ("sigma",)),
    Case("bad-tiles", R + " -o {o}/out.tif --tiles 0", 12, ("tiles",)),
    Case("bad-window-size", R + " -o {o}/out.tif --window-size -5", 12, ("window-size",)),
    Case("bad-gcps-suffix", R + " -o {o}/out.tif --gcps {o}/tp.kml", 12, (".kml",)),
    # ---- outputs that are inputs or each other (12), devices and links (12)
    Case("out-is-moving", R + " -o {i}/mov.tif --overwrite", 12, ("mov.tif", "moving image")),
    Case("out-is-reference", R + " -o {i}/ref.tif --overwrite", 12, ("ref.tif", "reference")),
    Case(
        "report-is-moving",
        R + " -o {o}/out.tif --report {i}/mov.tif --overwrite",
        12,
        ("report", "mov.tif"),
    ),  # fmt: skip
    Case("out-json-is-its-report", R + " -o {o}/out.json", 12, ("out.json", "report")),
    Case("plot-is-output", R + " -o {o}/out.tif --plot {o}/out.tif", 12, ("plot", "out.tif")),
    Case("gcps-is-report", R + " -o {o}/out.tif --gcps {o}/out.json", 12, ("tie-point",)),
    Case(
        "plot-is-input",
        R + " -o {o}/out.tif --plot {i}/ref.tif --overwrite",
        12,
        ("plot", "ref.tif"),
    ),  # fmt: skip
    Case(
        "output-is-model", R + " -o {i}/text.pt --model {i}/text.pt --overwrite", 12, ("model",)
    ),  # fmt: skip
    Case(
        "hard-link-to-moving",
        R + " -o {o}/hard.tif --overwrite",
        12,
        ("hard.tif", "mov.tif"),
        _hard_link,
    ),  # fmt: skip
    Case(
        "symlink-out-of-folder",
        R + " -o {o}/link.tif --overwrite",
        12,
        ("symbolic link",),
        _symlink_out,
    ),  # fmt: skip
    Case("device-as-output", R + " -o /dev/null --overwrite", 12, ("/dev/null", "device")),
    Case("fifo-as-output", R + " -o {o}/fifo.tif --overwrite", 12, ("pipe",), _fifo),
    Case("output-is-folder", R + " -o {o} --overwrite", 9, ("folder",)),
    Case("output-folder-missing", R + " -o {o}/no/such/out.tif", 9, ("does not exist",)),
    Case("output-exists", R + " -o {o}/out.tif", 10, ("exists",), _existing_output),
    # ---- models (13)
    Case("model-missing", R + " -o {o}/out.tif --model {i}/nope.pt", 13, ("nope.pt",)),
    Case(
        "model-pickled-code",
        R + " -o {o}/out.tif --model {i}/evil.pt",
        13,
        ("not plain tensors", "safety"),
    ),  # fmt: skip
    Case("model-text", R + " -o {o}/out.tif --model {i}/text.pt", 13, ("text.pt",)),
    Case("model-truncated", R + " -o {o}/out.tif --model {i}/trunc.pt", 13, ("trunc.pt",)),
    Case("model-mchan-150", R + " -o {o}/out.tif --model {i}/mchan150.pt", 13, ("mchan=150",)),
    Case(
        "model-mchan-100000",
        R + " -o {o}/out.tif --model {i}/mchan100000.pt",
        13,
        ("mchan=100000",),
    ),  # fmt: skip
    Case(
        "model-weights-of-other-width",
        R + " -o {o}/out.tif --model {i}/mchan16.pt",
        13,
        ("does not fit",),
    ),  # fmt: skip
    Case("model-dim-0", R + " -o {o}/out.tif --model {i}/dim0.pt", 13, ("dim=0",)),
    Case("model-unknown-arch", R + " -o {o}/out.tif --model {i}/arch.pt", 13, ("resnet",)),
    Case("model-in-channels", R + " -o {o}/out.tif --model {i}/inch.pt", 13, ("in_channels",)),
    Case("model-future-format", R + " -o {o}/out.tif --model {i}/future.pt", 13, ("99",)),
    Case("model-misfit-shape", R + " -o {o}/out.tif --model {i}/shape.pt", 13, ("1000",)),
    Case(
        "model-foreign-dict", R + " -o {o}/out.tif --model {i}/foreign.pt", 13, ("not a sarreg",)
    ),  # fmt: skip
    # ---- extract
    Case(
        "extract-out-is-image", "extract {i}/mov.tif -o {i}/mov.tif --overwrite", 12, ("mov.tif",)
    ),  # fmt: skip
    Case("extract-missing-image", "extract {i}/nope.tif -o {o}/f.npz", 3, ("nope.tif",)),
    Case(
        "extract-pickled-model",
        "extract {i}/mov.tif -o {o}/f.npz --model {i}/evil.pt",
        13,
        ("safety",),
    ),  # fmt: skip
    Case("extract-constant", "extract {i}/const.tif -o {o}/f.npz", 6, ("const.tif",)),
    # ---- batch
    Case(
        "batch-missing-reference",
        "batch -r {i}/nope.tif {i}/mov.tif -o {o}/b --workers 0",
        3,
        ("nope.tif",),
    ),  # fmt: skip
    Case(
        "batch-csv-columns",
        "batch --pairs {i}/pairs_nocols.csv -o {o}/b --workers 0",
        12,
        ("reference",),
    ),  # fmt: skip
    Case(
        "batch-output-is-input",
        "batch --pairs {o}/pairs.csv -o {i} --workers 0",
        12,
        ("mov.tif",),
        _pairs_into_inputs,
    ),  # fmt: skip
    Case(
        "batch-same-output-twice",
        "batch --pairs {o}/pairs.csv -o {o}/b --workers 0",
        12,
        ("a.tif",),
        _pairs_dup,
    ),  # fmt: skip
    # ---- train
    Case("train-no-data", "train --out {o}/run", 12, ("training data",)),
    Case("train-missing-data", "train --data {i}/nope --out {o}/run", 15, ("nope",)),
    Case("train-lr-nan", "train --config smoke --lr nan --out {o}/run", 12, ("lr",)),
    Case("train-lr-negative", "train --config smoke --lr -1 --out {o}/run", 12, ("lr",)),
    Case(
        "train-init-pickled-code",
        "train --config smoke --init {i}/evil.pt --out {o}/run",
        13,
        ("safety",),
    ),  # fmt: skip
    Case(
        "train-init-crafted",
        "train --config smoke --init {i}/mchan100000.pt --out {o}/run",
        13,
        ("mchan=100000",),
    ),  # fmt: skip
    Case(
        "train-out-is-file",
        "train --config smoke --out {o}/run",
        9,
        ("not a folder",),
        _file_as_out_dir,
    ),  # fmt: skip
    Case(
        "train-lr-overflows",
        "train --config smoke --lr 1e38 --steps 1 --no-progress --out {o}/run",
        14,
        ("lr",),
    ),  # fmt: skip
    Case(
        "train-unknown-config", "train --config nosuchpreset --out {o}/run", 12, ("nosuchpreset",)
    ),  # fmt: skip
    # ---- evaluate
    Case(
        "evaluate-bad-checkpoint",
        "evaluate run {i}/bench --method sarreg:{i}/text.pt --out {o}/res",
        13,
        ("text.pt",),
    ),  # fmt: skip
    Case(
        "evaluate-missing-checkpoint",
        "evaluate run {i}/bench --method sarreg:{i}/nope.pt --out {o}/res",
        13,
        ("nope.pt",),
    ),  # fmt: skip
    Case(
        "evaluate-unknown-method",
        "evaluate run {i}/bench --method surf --out {o}/res",
        12,
        ("surf",),
    ),  # fmt: skip
    Case(
        "evaluate-empty-benchmark",
        "evaluate run {i}/bench --method sift --out {o}/res",
        16,
        ("bench",),
    ),  # fmt: skip
]


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every entry under ``folders``: SHA-256 of regular files, the target of links, the kind
    of anything else (hidden temporary files included)."""
    out: dict[str, str] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                p = Path(root) / name
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[str(p)] = "dir" if p.is_dir() else "special"
    return out


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # --config smoke reads data/ relative to the repository
    out = tmp_path / "out"
    out.mkdir()
    if case.setup is not None:
        case.setup(inputs, out)
    before = _snapshot(inputs, out)
    argv = case.args.format(i=inputs, o=out).split()
    code, err = _run(argv, capsys)
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert code == case.code, err
    assert "Traceback" not in err
    assert len(errors) == 1 and errors[0].startswith("sarreg: error: "), err
    for word in case.words:
        assert word in errors[0], errors[0]
    assert _snapshot(inputs, out) == before  # inputs unchanged, nothing left behind
    assert not Path("/tmp/sarreg_pwned_by_test").exists()


def test_table_is_large_and_covers_every_code() -> None:
    assert len(CASES) >= 40
    assert {c.code for c in CASES} >= {3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16}


# ------------------------------------------------------------------------------ good inputs


def test_cint16_reads_as_amplitude_and_registers(inputs: Path, tmp_path: Path, capsys) -> None:
    """A CInt16 GeoTIFF (Sentinel-1 SLC's type) made from the bundled sample: amplitude read
    in full and in windows, registered and extracted."""
    from sarreg.io import read_raster

    with rasterio.open(inputs / "mov.tif") as src:
        power, profile = src.read(1).astype(np.float64), src.profile
    amp = np.sqrt(np.nan_to_num(np.clip(power, 0, None)))
    amp *= 3000.0 / amp.max()
    phase = np.random.default_rng(0).uniform(0, 2 * np.pi, amp.shape)
    z = (amp * np.exp(1j * phase)).astype(np.complex64)
    path = _write(tmp_path / "slc.tif", profile, z, dtype="complex_int16", nodata=None)
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "complex_int16"
    full = read_raster(path)
    assert full.kind == "amplitude" and full.data.dtype == np.float32
    expected = np.abs(np.round(z.real) + 1j * np.round(z.imag))
    # GDAL rounds half-way parts its own way: within one integer step per part
    np.testing.assert_allclose(full.data[full.mask], expected[full.mask], atol=1.5)
    ys, xs = np.nonzero(full.mask)
    cx, cy = int(np.median(xs)) - 32, int(np.median(ys)) - 24
    win = read_raster(path, window=(cx, cy, 64, 48))
    assert win.mask.mean() > 0.5
    np.testing.assert_allclose(win.data, full.data[cy : cy + 48, cx : cx + 64], rtol=1e-6)
    dec = read_raster(path, max_size=100)
    assert dec.data.shape[1] == 100 and np.isfinite(dec.data).all()
    assert (
        main(["register", str(inputs / "ref.tif"), str(path), "-o", str(tmp_path / "o.tif")]) == 0
    )
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["inliers"] >= 100 and report["rmse_px"] < 2.0
    assert _demo_error(report) < 0.65  # the demo's known transform, measured 0.486 (affine)
    with rasterio.open(tmp_path / "o.tif") as dst:
        assert dst.dtypes[0] == "float32"
    assert main(["extract", str(path), "-o", str(tmp_path / "f.npz")]) == 0


def test_scattered_nonfinite_pixels_register_and_are_counted(inputs: Path, tmp_path: Path) -> None:
    """12 % scattered NaN/inf pixels: registered (not refused as featureless), counted."""
    with rasterio.open(inputs / "mov.tif") as src:
        data, profile = src.read(1), src.profile
    rng = np.random.default_rng(1)
    bad = rng.random(data.shape) < 0.12
    data = data.copy()
    data[bad] = np.where(rng.random(int(bad.sum())) < 0.5, np.inf, -np.inf)
    path = _write(tmp_path / "holes.tif", profile, data)
    code = main(["register", str(inputs / "ref.tif"), str(path), "-o", str(tmp_path / "o.tif")])
    assert code == 0
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["moving"]["nonfinite_pixels"] == int(bad.sum())
    assert report["reference"]["nonfinite_pixels"] == 0
    assert report["inliers"] >= 100
    assert _demo_error(report) < 0.4  # the demo's known transform, measured 0.300 (affine)


def _demo_error(report: dict) -> float:
    """RMSE (px) of the report's transform against the demo pair's known one."""
    from sarreg.geometry import mapping_rmse

    truth = np.array(json.loads((DEMO / "truth.json").read_text())["matrix_mov_to_ref"])
    return mapping_rmse(np.array(report["transform"]["pixel_matrix"]), truth, (250, 350))


def test_negative_values_read_as_power_warn(inputs: Path, caplog) -> None:
    from sarreg.io import read_raster

    with rasterio.open(inputs / "mov.tif") as src:
        power, profile = src.read(1), src.profile
    db = 10 * np.log10(np.clip(power, 1e-6, None))
    path = _write(inputs.parent / "db_as_power.tif", profile, db.astype(np.float32))
    with caplog.at_level("WARNING", logger="sarreg.io"):
        read_raster(path, kind="power")
    assert any("negative" in r.getMessage() and "--kind db" in r.getMessage()
               for r in caplog.records)  # fmt: skip


# ------------------------------------------------------------------------------ full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 kB tmpfs (needs mount rights; skipped without them)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                         capture_output=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("which", ["image", "report", "features"])
def test_full_disk_exits_9_naming_the_path(which, inputs: Path, small_disk: Path, tmp_path,
                                           capsys) -> None:  # fmt: skip
    out = tmp_path / "o"
    out.mkdir()
    if which == "image":
        argv = ["register", str(inputs / "ref.tif"), str(inputs / "mov.tif"),
                "-o", str(small_disk / "out.tif")]  # fmt: skip
        target = small_disk / "out.tif"
    elif which == "report":
        (small_disk / "fill").write_bytes(b"\0" * 60_000)
        argv = ["register", str(inputs / "ref.tif"), str(inputs / "mov.tif"),
                "-o", str(out / "out.tif"), "--report", str(small_disk / "r.json")]  # fmt: skip
        target = small_disk / "r.json"
    else:
        argv = ["extract", str(inputs / "mov.tif"), "-o", str(small_disk / "f.npz")]
        target = small_disk / "f.npz"
    before = _snapshot(inputs)
    code, err = _run(argv, capsys)
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert code == 9, err
    assert len(errors) == 1 and str(target) in errors[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == (["fill"] if which == "report" else [])
    assert list(out.iterdir()) == []  # the image of the group went with the failed report
    assert _snapshot(inputs) == before


# ------------------------------------------------------------------------------ memory limit


def test_crafted_checkpoint_refused_within_300_mb(inputs: Path, tmp_path: Path) -> None:
    """mchan=100000 would allocate terabytes; refused with exit 13 under a 300 MB address-space
    allowance above what the loaded interpreter already maps."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        import torch
        from sarreg.cli import main
        # warm up: every library extract maps (GDAL, OpenCV, torch) and the bundled model
        warm = ["extract", {str(inputs / "mov.tif")!r}, "-o", {str(tmp_path / "w.npz")!r}]
        assert main(warm) == 0
        with open("/proc/self/status") as f:
            vm = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize"))
        limit = vm + 300 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        codes = [main(["extract", {str(inputs / "mov.tif")!r}, "-o", {str(tmp_path / "x.npz")!r},
                       "--model", p]) for p in sys.argv[1:]]
        print("codes", codes, "limit_mb", limit >> 20)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(inputs / "mchan100000.pt"), str(inputs / "mchan150.pt"),
         str(inputs / "mchan16.pt")],  # fmt: skip
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "codes [13, 13, 13]" in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "x.npz").exists()
    assert "limit_mb" in proc.stdout


# ------------------------------------------------------------------------------ signals


def _sarreg(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sarreg", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


GROUP = ("out.tif", "out.json", "tp.csv", "plot.png")


def _group_state(folder: Path) -> tuple[str, list[str]]:
    names = sorted(p.name for p in folder.iterdir())
    hidden = [n for n in names if n.startswith(".")]
    present = [n for n in GROUP if (folder / n).exists()]
    state = "complete" if len(present) == len(GROUP) else ("absent" if not present else "partial")
    return state, hidden


def test_sigterm_leaves_the_complete_group_or_nothing(inputs: Path, tmp_path: Path) -> None:
    args = ["register", str(inputs / "ref.tif"), str(inputs / "mov.tif"), "-o", "out.tif",
            "--gcps", "tp.csv", "--plot", "plot.png"]  # fmt: skip
    full = tmp_path / "full"
    full.mkdir()
    t0 = time.perf_counter()
    proc = _sarreg(args, full)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    wall = time.perf_counter() - t0
    assert _group_state(full) == ("complete", [])
    before = _snapshot(inputs)
    seen = {}
    for k, frac in enumerate((0.15, 0.45, 0.7, 0.92)):
        folder = tmp_path / f"run{k}"
        folder.mkdir()
        sig = signal.SIGHUP if k == 1 else signal.SIGTERM
        proc = _sarreg(args, folder)
        time.sleep(frac * wall)
        proc.send_signal(sig)
        rc = proc.wait(timeout=300)
        err = proc.stderr.read()
        state, hidden = _group_state(folder)
        assert hidden == [], f"temporary files left at {frac}: {hidden}"
        assert state in ("complete", "absent"), f"partial group at {frac}"
        assert "Traceback" not in err, err
        if state == "absent":
            assert rc == 128 + sig, (rc, err)
            assert err.strip().splitlines()[-1] == "sarreg: interrupted"
        seen[state] = seen.get(state, 0) + 1
    assert seen.get("absent", 0) >= 1  # at least one run was really interrupted
    assert _snapshot(inputs) == before


def test_sigterm_in_batch_leaves_scene_not_done(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    args = ["batch", "-r", str(inputs / "ref.tif"), str(inputs / "mov.tif"),
            str(inputs / "noise.tif"), "-o", str(out), "--workers", "0",
            "--no-progress"]  # fmt: skip
    proc = _sarreg(args, tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "mov.batch.json").exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # during the second scene (or at its very end)
    rc = proc.wait(timeout=300)
    assert rc in (143, 18), proc.stderr.read()
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == []
    if rc == 143:
        assert not (out / "noise.batch.json").exists()
    # a rerun finishes the batch: the interrupted scene is redone, the done one skipped
    proc = _sarreg(args, tmp_path)
    rc2 = proc.wait(timeout=300)
    assert rc2 in (0, 18), proc.stderr.read()
    assert (out / "noise.batch.json").exists()
