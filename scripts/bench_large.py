"""Benchmark ``sarreg register`` end to end on a large (default 10000 x 10000) pair with a known
affine warp: wall time, peak memory and error against the truth.

The reference is a mosaic of the bundled Umbra scene (2000 x 2000, 0.6 m): 5 x 5 copies mirrored
alternately so that the texture is continuous at full resolution, written tiled, deflate-compressed
and with overviews, with the Umbra CRS and (rotated) geotransform extended over the mosaic. The
moving image is that mosaic warped by a known affine (rotation, scale, shift) with
``sarreg.warp.resample_to_grid`` (window by window, bounded memory) and written with the same
geotransform, so its georeferencing is wrong by exactly the known warp; it has no overviews
(a fresh scene). Both are built once into ``--folder`` and reused.

The registration runs the real CLI in a fresh process (Python start-up and model loading
included); peak memory is the child's maximum resident set size (``wait4``); the error is the
RMSE of the estimated mapping against the truth over a grid of moving pixels.

    python scripts/bench_large.py                        # 10000 x 10000, affine
    python scripts/bench_large.py --transform poly2 --gcps
    python scripts/bench_large.py --size 6000 --args="--tiles 4 --tile-size 512"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from sarreg.geometry import mapping_rmse, similarity_about_centre

REPO = Path(__file__).resolve().parents[1]
UMBRA = REPO / "data" / "umbra_mount_yasur.tif"
ROTATION_DEG = 1.5
SCALE = 1.01
SHIFT = (23.4, -17.8)


def build_reference(path: Path, size: int) -> None:
    """Mirrored mosaic of the Umbra scene, ``size x size`` uint8, tiled + deflate + overviews."""
    with rasterio.open(UMBRA) as ds:
        src = ds.read(1)
        profile = ds.profile
    h, w = src.shape
    profile.update(
        width=size, height=size, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )  # fmt: skip
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as out:
        for i in range(0, size, h):
            for j in range(0, size, w):
                block = src[:, ::-1] if (j // w) % 2 else src
                block = block[::-1] if (i // h) % 2 else block
                hh, ww = min(h, size - i), min(w, size - j)
                out.write(np.ascontiguousarray(block[:hh, :ww]), 1, window=Window(j, i, ww, hh))
        out.build_overviews([2, 4, 8, 16, 32], Resampling.average)
    os.replace(tmp, path)


def build_moving(ref: Path, path: Path, truth_path: Path, size: int) -> np.ndarray:
    """``ref`` warped by the known affine (same geotransform); returns the true M (mov->ref)."""
    from sarreg.warp import grid_of, resample_to_grid

    w = similarity_about_centre((size, size), ROTATION_DEG, SCALE, SHIFT)
    tmp = path.with_suffix(".tmp.tif")
    resample_to_grid(ref, 1, w, grid_of(ref), tmp, overwrite=True)  # ref px -> moving px
    os.replace(tmp, path)
    m_true = np.linalg.inv(w)
    truth = {
        "matrix_mov_to_ref": m_true.tolist(),
        "convention": "moving pixel centre (x, y, 1) -> reference pixel centre",
        "rotation_deg": ROTATION_DEG,
        "scale": SCALE,
        "shift_px": list(SHIFT),
        "size": size,
    }
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return m_true


def run_once(args: list[str]) -> tuple[int, float, float, float, str]:
    """Run a command; return (exit code, wall s, CPU s (user + system), peak RSS MB, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)  # output is short: pipes cannot fill up
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    cpu = rusage.ru_utime + rusage.ru_stime
    return os.waitstatus_to_exitcode(status), wall, cpu, rusage.ru_maxrss / 1024.0, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--folder", type=Path, default=REPO / "out" / "bench_large")
    parser.add_argument("--transform", default="affine")
    parser.add_argument("--gcps", action="store_true", help="also export the tie points")
    parser.add_argument("--args", default="", help="extra arguments for sarreg register")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the image pair")
    opts = parser.parse_args()

    folder = opts.folder / str(opts.size)
    folder.mkdir(parents=True, exist_ok=True)
    ref, mov, truth_path = folder / "ref.tif", folder / "mov.tif", folder / "truth.json"
    if opts.rebuild or not ref.exists():
        t0 = time.perf_counter()
        build_reference(ref, opts.size)
        print(f"built {ref} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if opts.rebuild or not mov.exists() or not truth_path.exists():
        t0 = time.perf_counter()
        build_moving(ref, mov, truth_path, opts.size)
        print(f"built {mov} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    m_true = np.array(json.loads(truth_path.read_text())["matrix_mov_to_ref"])

    out = folder / f"aligned_{opts.transform}.tif"
    cmd = [sys.executable, "-m", "sarreg", "register", str(ref), str(mov), "-o", str(out),
           "--transform", opts.transform, "--overwrite", "--no-progress"]  # fmt: skip
    if opts.gcps:
        cmd += ["--gcps", str(folder / f"tie_points_{opts.transform}.geojson")]
    cmd += shlex.split(opts.args)
    load = os.getloadavg()[0]
    code, wall, cpu, rss, err = run_once(cmd)
    if code != 0:
        print(f"sarreg register failed (exit {code}): {err.strip()[-500:]}")
        return 1
    rep = json.loads(out.with_suffix(".json").read_text())
    shape = (opts.size, opts.size)
    step = max(16, opts.size // 200)
    err_px = mapping_rmse(np.array(rep["transform"]["pixel_matrix"]), m_true, shape, step)
    err_note = f"{err_px:.3f}"
    if rep["transform"].get("mapping"):
        err_note += f" (affine approximation of the {opts.transform} mapping)"
    t = rep["timings_s"]
    coarse = rep.get("coarse") or {}
    print(
        f"\nsarreg register, {opts.size} x {opts.size} mirrored Umbra mosaic (uint8, 0.6 m), known "
        f"affine (rot {ROTATION_DEG} deg, scale {SCALE}, shift {SHIFT[0]},{SHIFT[1]} px), "
        f"transform {opts.transform}, {os.cpu_count()} CPUs\n"
    )
    print("| figure | value |\n|---|---|")
    rows = [
        ("command", "`" + " ".join(shlex.quote(c) for c in cmd[1:]) + "`"),
        ("wall time, whole CLI process (s)", f"{wall:.1f}"),
        ("CPU time, user + system (s)", f"{cpu:.1f}"),
        ("load average before the run (other processes)", f"{load:.1f}"),
        ("time inside register() (s)", f"{t['total']:.1f}"),
        ("peak RSS (MB)", f"{rss:.0f}"),
        ("error vs truth, RMSE over the image (px)", err_note),
        ("inliers / tie points", f"{rep['inliers']} / {rep['matches']}"),
        ("tiles used / planned", f"{coarse.get('tiles_used')} / {coarse.get('tiles_planned')}"),
        ("coarse pass decimation", f"{coarse.get('decimation_ref', float('nan')):.2f}"),
        ("stage times (s)", ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
