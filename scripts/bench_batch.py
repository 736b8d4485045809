"""Benchmark ``sarreg batch``: throughput on 8 medium pairs with 1 and 2 local Dask workers.

Builds 8 pairs from the bundled Umbra scene (``--size`` x ``--size`` crops at different places,
each moving image warped by its own known affine and written with the reference crop's
geotransform, so its georeferencing is off by the warp), writes them as a pairs CSV, and runs
the real ``sarreg batch`` command once per configuration (``workers:threads_per_worker``) in a
fresh process and a fresh output folder. The table gives the wall time of the whole command
(start-up, cluster start, model loads included), scenes per minute, and the error of each
estimated transform against the known one (RMSE over a grid of moving pixels, reference px).
The machine's 1-minute load average at the end of each run is printed too: other processes
competing for the cores make the figures meaningless for scaling.

    python scripts/bench_batch.py                        # 1:1, 2:1 and 1:2, 1024 px pairs
    python scripts/bench_batch.py --configs 0:2 2:1 --size 1536
    python scripts/bench_batch.py --configs 2:1 1:1 2:1 1:1   # alternate, against load drift
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

from sarreg.geometry import mapping_rmse, similarity_about_centre

REPO = Path(__file__).resolve().parents[1]
UMBRA = REPO / "data" / "umbra_mount_yasur.tif"
N_PAIRS = 8


def make_pairs(folder: Path, size: int, n: int = N_PAIRS, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``n`` pairs and ``pairs.csv`` into ``folder``; return {name: true mov->ref matrix}."""
    rng = np.random.default_rng(seed)
    truth = {}
    with rasterio.open(UMBRA) as ds:
        span = min(ds.width, ds.height) - size
        if span < 0:
            raise SystemExit(f"--size {size} is larger than the Umbra scene ({ds.width} px)")
        profile = dict(ds.profile, width=size, height=size, tiled=False)
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        rows = []
        for i in range(n):
            col, row = (int(v) for v in rng.integers(0, span + 1, size=2))
            win = Window(col, row, size, size)
            ref = ds.read(1, window=win)
            profile["transform"] = ds.window_transform(win)
            w = similarity_about_centre(
                ref.shape,
                float(rng.uniform(-5, 5)),
                float(rng.uniform(0.95, 1.05)),
                tuple(float(v) for v in rng.uniform(-12, 12, size=2)),
            )
            mov = cv2.warpAffine(ref, w[:2], (size, size), flags=cv2.INTER_LINEAR)
            name = f"pair{i}"
            paths = folder / f"{name}_ref.tif", folder / f"{name}_mov.tif"
            for path, data in zip(paths, (ref, mov), strict=True):
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data, 1)
            rows.append({"reference": paths[0].name, "moving": paths[1].name, "output": name})
            truth[name] = np.linalg.inv(w)
    with open(folder / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["reference", "moving", "output"])
        writer.writeheader()
        writer.writerows(rows)
    return truth


def run_config(folder: Path, run: int, workers: int, threads: int, extra: list[str]) -> dict:
    out = folder / f"out{run}_w{workers}_t{threads}"  # fresh: nothing to skip
    cmd = [
        sys.executable,
        "-m",
        "sarreg",
        "batch",
        "--pairs",
        str(folder / "pairs.csv"),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--threads-per-worker",
        str(threads),
        "--no-progress",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return {"workers": workers, "threads": threads, "wall": wall, "code": proc.returncode,
            "out": out, "stderr": proc.stderr.strip(),
            "load": os.getloadavg()[0]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="*",
        default=["1:1", "2:1", "1:2"],
        help="workers:threads_per_worker to run (workers 0 = in-process, no Dask)",
    )
    parser.add_argument("--size", type=int, default=1024, help="side of each image (px)")
    parser.add_argument("--batch-args", default="", help="extra sarreg batch options, quoted")
    opts = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = make_pairs(folder, opts.size)
        for run, spec in enumerate(opts.configs):
            workers, threads = (int(v) for v in spec.split(":"))
            r = run_config(folder, run, workers, threads, opts.batch_args.split())
            errors, ok, seconds, cpu = [], 0, [], []
            summary = r["out"] / "batch_summary.csv"
            if summary.exists():
                with open(summary, newline="") as f:
                    for row in csv.DictReader(f):
                        if row["status"] != "ok":
                            continue
                        ok += 1
                        seconds.append(float(row["seconds"]))
                        cpu.append(float(row["cpu_seconds"]))
                        rep = json.loads(Path(row["report"]).read_text())
                        m = np.array(rep["transform"]["pixel_matrix"])
                        errors.append(mapping_rmse(m, truth[row["name"]], (opts.size,) * 2))
            r.update(ok=ok, errors=errors, task_s=seconds, cpu_s=cpu)
            rows.append(r)
            if r["code"] != 0:
                print(f"{spec}: exit {r['code']}: {r['stderr'][-300:]}", file=sys.stderr)

    print(
        f"\nsarreg batch, {N_PAIRS} Umbra pairs of {opts.size} x {opts.size} px (known affines: "
        "rotation +-5 deg, scale 0.95..1.05, shift +-12 px), bundled model\n"
    )
    print(
        "| workers | threads/worker | wall s | scenes/min | ok | mean task s (CPU s) "
        "| error px mean / max | load avg (1 min, at end) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        err = r["errors"]
        err_txt = f"{np.mean(err):.3f} / {np.max(err):.3f}" if err else "-"
        task = f"{np.mean(r['task_s']):.1f} ({np.mean(r['cpu_s']):.1f})" if r["task_s"] else "-"
        print(
            f"| {r['workers'] or '0 (in-process)'} | {r['threads']} | {r['wall']:.1f} "
            f"| {60.0 * N_PAIRS / r['wall']:.1f} | {r['ok']}/{N_PAIRS} | {task} | {err_txt} "
            f"| {r['load']:.1f} |"
        )
    print(
        "\ncommand per row: sarreg batch --pairs pairs.csv -o OUT --workers W "
        "--threads-per-worker T --no-progress"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
