"""How the cost of ``sarreg register`` grows with the image: georeferenced pairs of 512 to 10000
pixels a side, registered through the CLI, next to a SIFT + MAGSAC + warp yardstick on the same
pairs in the same run.

Each pair is a mirrored mosaic of the bundled Umbra scene (as ``scripts/bench_large.py`` builds
it: tiled, deflate, overviews, the Umbra CRS and rotated geotransform) and that mosaic warped by
a known affine (1.5 deg, scale 1.01, shift 23.4, -17.8 px), written with the reference's
geotransform, so that its georeferencing is wrong by exactly the warp. Pairs are built once into
``--folder`` and reused.

Every run is a fresh process (start-up, imports, model loading included): wall time, CPU time
(user + system), peak resident memory of the child (``wait4``) and the error of the estimated
transform against the truth (RMSE over a grid of moving pixels, reference pixels). The
yardstick reads both images (decimated to at most ``--sift-max`` pixels), runs OpenCV SIFT
(5000 features), ratio-test matching, keeps the matches within ``--sift-radius`` reference
pixels of where the georeferencing puts them (the mosaics are point-symmetric, so without this
prior SIFT, being rotation-invariant, can lock onto the 180 deg copy, as it did at 4096 and
10000), an affine USAC MAGSAC fit, and writes the moving image warped onto the reference grid
as a GeoTIFF.

    python scripts/bench_scaling.py                          # 512 1024 2048 4096 10000
    python scripts/bench_scaling.py --sizes 512 1024 2048 4096
    python scripts/bench_scaling.py --code /path/to/other/checkout   # compare another version

Timings depend on the machine's load: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

YARDSTICK = r"""
import sys, json
import cv2, numpy as np, rasterio
from rasterio.enums import Resampling
ref_p, mov_p, out_p, max_side = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
radius = float(sys.argv[5])
def read(p):
    with rasterio.open(p) as ds:
        d = max(1.0, max(ds.width, ds.height) / max_side)
        shape = (int(round(ds.height / d)), int(round(ds.width / d)))
        a = ds.read(1, out_shape=shape, resampling=Resampling.average)
        g = np.array(ds.transform).reshape(3, 3)  # full-resolution pixel corners -> map
        return a, d, ds.profile, g
ref, dr, prof, g_ref = read(ref_p)
mov, dm, _, g_mov = read(mov_p)
sift = cv2.SIFT_create(nfeatures=5000)
kr, dr_ = sift.detectAndCompute(ref.astype(np.uint8), None)
km, dm_ = sift.detectAndCompute(mov.astype(np.uint8), None)
pairs = cv2.BFMatcher().knnMatch(dm_, dr_, k=2)
good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
src = np.float64([km[g.queryIdx].pt for g in good])
dst = np.float64([kr[g.trainIdx].pt for g in good])
# work pixels -> full-resolution pixel centres of each file
to_full = lambda d: np.array([[d, 0, 0.5 * d - 0.5], [0, d, 0.5 * d - 0.5], [0, 0, 1]])
# the georeferencing prior: moving full-res pixel centres -> reference ones, through map space
half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
prior = np.linalg.inv(half) @ np.linalg.inv(g_ref) @ g_mov @ half
ap = lambda m, p: p @ m[:2, :2].T + m[:2, 2]
near = np.hypot(*(ap(prior @ to_full(dm), src) - ap(to_full(dr), dst)).T) <= radius
src, dst = src[near], dst[near]
a, inl = cv2.estimateAffine2D(src, dst, method=cv2.USAC_MAGSAC, ransacReprojThreshold=3.0)
m = np.vstack([a, [0, 0, 1]])
m_full = to_full(dr) @ m @ np.linalg.inv(to_full(dm))
warped = cv2.warpAffine(mov, a, ref.shape[::-1], flags=cv2.INTER_LINEAR)
prof.update(width=ref.shape[1], height=ref.shape[0], count=1, dtype=str(warped.dtype),
            tiled=True, compress="deflate")
with rasterio.open(out_p, "w", **prof) as o:
    o.write(warped, 1)
print(json.dumps({"matrix": m_full.tolist(), "inliers": int(inl.sum()), "matches": len(src)}))
"""


def build_pair(folder: Path, size: int) -> tuple[Path, Path, np.ndarray]:
    """The mosaic pair of ``size`` pixels (built once), and the true moving -> reference M."""
    from bench_large import build_moving, build_reference

    d = folder / str(size)
    d.mkdir(parents=True, exist_ok=True)
    ref, mov, truth = d / "ref.tif", d / "mov.tif", d / "truth.json"
    if not ref.exists():
        t0 = time.perf_counter()
        build_reference(ref, size)
        print(f"built {ref} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not mov.exists() or not truth.exists():
        t0 = time.perf_counter()
        build_moving(ref, mov, truth, size)
        print(f"built {mov} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return ref, mov, np.array(json.loads(truth.read_text())["matrix_mov_to_ref"])


def run_child(cmd: list[str], env=None, cwd=None) -> tuple[int, float, float, float, str, str]:
    """Run a command; (exit code, wall s, CPU s (user + system), peak RSS MB, stdout, stderr)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=cwd, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, out, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 10000])
    parser.add_argument("--folder", type=Path, default=REPO / "out" / "bench_scaling")
    parser.add_argument("--code", type=Path, default=REPO, help="sarreg checkout to run")
    parser.add_argument("--sift-max", type=int, default=4096, help="yardstick read size")
    parser.add_argument(
        "--sift-radius",
        type=float,
        default=200.0,
        help="yardstick: keep matches within this many reference pixels of the georeferencing",
    )
    parser.add_argument("--args", default="", help="extra arguments for sarreg register")
    parser.add_argument("--no-yardstick", action="store_true")
    opts = parser.parse_args()

    from sarreg.geometry import mapping_rmse

    env = {**os.environ, "PYTHONPATH": str(opts.code.resolve())}
    cli = [sys.executable, "-c", "from sarreg.cli import run; run()"]
    rows = []
    load = os.getloadavg()[0]
    for size in sorted(opts.sizes):
        ref, mov, m_true = build_pair(opts.folder, size)
        d = ref.parent
        step = max(16, size // 200)
        out = d / "aligned.tif"
        cmd = cli + [
            "register",
            str(ref),
            str(mov),
            "-o",
            str(out),
            "--overwrite",
            "--no-progress",
            *opts.args.split(),
        ]
        code, wall, cpu, rss, _, err = run_child(cmd, env=env, cwd=d)
        if code != 0:
            print(f"{size}: sarreg register failed (exit {code}): {err.strip()[-400:]}")
            return 1
        rep = json.loads(out.with_suffix(".json").read_text())
        e = mapping_rmse(np.array(rep["transform"]["pixel_matrix"]), m_true, (size, size), step)
        tiles = rep.get("coarse") or {}
        row = {
            "size": size,
            "wall": wall,
            "cpu": cpu,
            "rss": rss,
            "err": e,
            "inside": rep["timings_s"].get("total", float("nan")),
            "tiles": f"{tiles.get('tiles_used', 0)}/{tiles.get('tiles_planned', 0)}",
        }
        if not opts.no_yardstick:
            ycmd = [
                sys.executable,
                "-c",
                YARDSTICK,
                str(ref),
                str(mov),
                str(d / "sift.tif"),
                str(opts.sift_max),
                str(opts.sift_radius),
            ]
            ycode, ywall, ycpu, yrss, yout, yerr = run_child(ycmd, cwd=d)
            if ycode == 0:
                ym = np.array(json.loads(yout.strip().splitlines()[-1])["matrix"])
                row.update(
                    swall=ywall,
                    scpu=ycpu,
                    srss=yrss,
                    serr=mapping_rmse(ym, m_true, (size, size), step),
                )
            else:
                row.update(
                    swall=float("nan"), scpu=float("nan"), srss=float("nan"), serr=float("nan")
                )
                print(f"{size}: yardstick failed: {yerr.strip()[-300:]}", file=sys.stderr)
        rows.append(row)
        print(f"{size}: {row}", file=sys.stderr)

    print(
        f"\nsarreg {opts.code} vs SIFT + MAGSAC + warp (yardstick reads <= {opts.sift_max} px);"
        f" load average {load:.1f} on {os.cpu_count()} cores at start\n"
    )
    head = (
        "| size | sarreg wall s | inside register() s | CPU s | peak MB | error px | tiles "
        "used/planned | SIFT wall s | SIFT CPU s | SIFT peak MB | SIFT error px | wall ratio |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    base = next((r for r in rows if r["size"] == 1024), None)
    for r in rows:
        print(
            f"| {r['size']} | {r['wall']:.2f} | {r['inside']:.2f} | {r['cpu']:.1f} | "
            f"{r['rss']:.0f} | {r['err']:.3f} | {r['tiles']} | {r.get('swall', float('nan')):.2f}"
            f" | {r.get('scpu', float('nan')):.1f} | {r.get('srss', float('nan')):.0f} | "
            f"{r.get('serr', float('nan')):.3f} | {r['wall'] / r.get('swall', float('nan')):.1f} |"
        )
    if base:
        print(
            "\nwall time relative to the 1024 pair: "
            + ", ".join(f"{r['size']}: {r['wall'] / base['wall']:.2f}x" for r in rows)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
