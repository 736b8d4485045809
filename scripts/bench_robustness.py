"""Robustness choices of the registration measured on a benchmark with known truth.

Runs ``sarreg register`` (the ``register`` method of ``sarreg evaluate``) on every pair of a
benchmark folder once per variant of the settings below and prints success@1/3, median RMSE
against the truth, refusals and the share of successful pairs whose predicted error is within
2x of the true one. Refused pairs count as failures.

    python scripts/bench_robustness.py BENCH [--variants default,refine,weighted,...]

Variants: default (the shipped settings: refine_tie_points and weighted_fit on); plain (both
off); refine (refinement alone); weighted (weighting by match similarity alone);
refine+weighted; upsampled (pyramid 2, 1.41, 1, i.e. ``--scales 2,1.41,1``: for images under
512 px); keypoints (top_k 10000).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

VARIANTS = {
    "default": {},
    "plain": {"estimate.refine_tie_points": False, "estimate.weighted_fit": False},
    "refine": {"estimate.refine_tie_points": True, "estimate.weighted_fit": False},
    "weighted": {"estimate.refine_tie_points": False, "estimate.weighted_fit": True},
    "refine+weighted": {"estimate.refine_tie_points": True, "estimate.weighted_fit": True},
    "upsampled": {"extract.scales": (2.0, 2**0.5, 1.0)},
    "keypoints": {"extract.top_k": 10000},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    opts = parser.parse_args()

    from sarreg.evaluation.bench import load_ground_truth, read_benchmark
    from sarreg.evaluation.methods import RegisterMethod, prepare_image
    from sarreg.evaluation.metrics import grid_points
    from sarreg.evaluation.run import RunConfig, _evaluate_one, summarize

    pairs = read_benchmark(opts.bench)
    methods = []
    for name in opts.variants.split(","):
        m = RegisterMethod(overrides=VARIANTS[name])
        m.name = m.label = name
        methods.append(m)
    records = []
    cfg = RunConfig()
    for pair in pairs:
        ref, mov = prepare_image(pair.reference), prepare_image(pair.moving)
        gt = load_ground_truth(pair, mov.shape)
        ref_ov, mov_ov = gt.overlap_masks(ref.shape, mov.shape, ref.valid, mov.valid)
        grid = grid_points(mov_ov, cfg.grid_step)
        line = []
        for m in methods:
            t0 = time.perf_counter()
            rec = _evaluate_one(m, pair, ref, mov, gt, ref_ov, mov_ov, grid, cfg)
            records.append(rec)
            r = rec["rmse"]
            line.append(f"{m.name} {'refused' if not math.isfinite(r) else f'{r:.3f}'}"
                        f" ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
        print(f"{pair.name}: " + ", ".join(line), file=sys.stderr, flush=True)
    rows = summarize(records, [(m.name, m.label) for m in methods])
    print("| variant | pairs | success@1 | success@3 | median RMSE px | mean RMSE px (registered)"
          " | refused | predicted within 2x | s/pair |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        w2 = row["error_within_2x"]
        print(
            f"| {row['label']} | {row['pairs']} | {row['success@1']:.2f} | "
            f"{row['success@3']:.2f} | {row['rmse_median']:.3f} | {row['rmse_mean']:.3f} | "
            f"{row['failures']} | {'-' if w2 is None else f'{w2:.2f}'} | "
            f"{row['time_total']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
