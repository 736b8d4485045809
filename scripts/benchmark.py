"""Compare sarreg with the classic SAR baselines on a synthetic benchmark, in one command.

Builds a reproducible benchmark (default: 50 medium pairs, 512 x 512 or the image's size, from
the bundled real SAR samples in data/: Umbra, Sentinel-1 GRD dB, the 3-date OPERA RTC series)
with `sarreg evaluate synth`, runs every available method with `sarreg evaluate run`, writes
results.md / results.csv / pairs.json / mma.png and prints the Markdown table. Takes minutes.

Note: the bundled samples are part of the training data of the bundled model (different
seeds, but the same scenes). `--heldout` uses the held-out Sentinel-1 tiles of
the fast_r2d2_sar preset (`val.sources`, never trained on) instead, where they exist.

    python scripts/benchmark.py
    python scripts/benchmark.py --n 50 --difficulty hard --seed 1
    python scripts/benchmark.py --heldout --out out/benchmark_heldout
    python scripts/benchmark.py --methods sarreg,sarreg:runs/mine/best.pt,sarsift
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ["data/umbra_mount_yasur.tif", "data/s1_vv_grd_db.tif", "data/opera_rtc_s1"]


def heldout_images() -> list[Path]:
    """The held-out validation tiles of the fast_r2d2_sar preset that exist here."""
    from sarreg.training.config import load_config

    paths = [Path(s.path) for s in load_config("fast_r2d2_sar").val.sources]
    return [p for p in paths if p.exists()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="pairs (default 50)")
    parser.add_argument("--difficulty", default="medium", help="easy | medium | hard")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed")
    parser.add_argument("--crop", type=int, default=512, help="pair side (default 512)")
    parser.add_argument("--images", nargs="*", default=None, help="default: bundled samples")
    parser.add_argument("--heldout", action="store_true", help="held-out S1 tiles instead")
    parser.add_argument("--methods", default=None, help="comma-separated; default all")
    parser.add_argument("--max-keypoints", type=int, default=2000)
    parser.add_argument("--out", default="out/benchmark", help="output folder")
    opts = parser.parse_args()

    from sarreg.evaluation.methods import default_methods
    from sarreg.evaluation.run import RunConfig, run_benchmark
    from sarreg.evaluation.synth import build_benchmark
    from sarreg.evaluation.tables import markdown_table, write_outputs

    if opts.heldout:
        images = heldout_images()
        if not images:
            print("no held-out tiles found (the fast_r2d2_sar preset val.sources)")
            return 1
        display_as = "intensity"  # the S1 tiles: intensity / 99 % quantile as uint8
    else:
        images = [REPO / p for p in (opts.images or BUNDLED)]
        display_as = "amplitude"  # the Umbra GEC product (as in the training config)
    out = Path(opts.out)
    bench = out / "bench"
    t0 = time.perf_counter()
    pairs = build_benchmark(
        images, bench, n=opts.n, seed=opts.seed, difficulty=opts.difficulty, crop=opts.crop,
        display_as=display_as, overwrite=True,
    )  # fmt: skip
    t_build = time.perf_counter() - t0
    methods = tuple(opts.methods.split(",")) if opts.methods else default_methods()
    cfg = RunConfig(methods=methods, max_keypoints=opts.max_keypoints)
    t0 = time.perf_counter()
    result = run_benchmark(bench, cfg, progress=lambda s: print(s, file=sys.stderr))
    t_run = time.perf_counter() - t0
    paths = write_outputs(result, out / "results", title=f"{opts.difficulty}, {len(pairs)} pairs")

    multi = sum(bool(p.tags.get("multidate")) for p in pairs)
    sizes = sorted({int(p.tags["crop"]) for p in pairs})
    print(
        f"\n{len(pairs)} {opts.difficulty} pairs ({multi} multi-date), sides "
        f"{'/'.join(map(str, sizes))} px, seed {opts.seed}, from "
        f"{', '.join(p.name for p in images)}; {opts.max_keypoints} keypoints per image, "
        f"mutual NN, fit_transform ({pairs[0].model}, RANSAC threshold 3 px) for every "
        "method\n"
    )
    print(markdown_table(result.summary))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"times: seconds per pair on {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"load average {load:.1f} at the end; build {t_build:.0f} s, run {t_run:.0f} s"
    )
    print(f"results: {paths['markdown'].parent} (results.md, results.csv, pairs.json, mma.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
