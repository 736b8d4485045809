"""Time the network and keypoint extraction on a 1024 x 1024 image for several widths.

Times are medians of ``--repeat`` runs after a warm-up, in this process (no start-up costs).
Random weights: the cost of a forward pass does not depend on the values.

    python scripts/bench_extract.py
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import numpy as np


def median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mchan", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument(
        "--no-context", action="store_true", help="without context descriptors (context_scale=None)"
    )
    opts = parser.parse_args()

    import torch

    from sarreg.features import ExtractConfig, extract
    from sarreg.model import build_model, flops_per_pixel

    rng = np.random.default_rng(0)
    img = rng.random((opts.size, opts.size), dtype=np.float32)
    pyramids = {"1": (1.0,), "1,0.5": (1.0, 0.5), "1,0.71,0.5": (1.0, 0.71, 0.5), "default": None}
    print(
        f"\n{opts.size} x {opts.size} image, {torch.get_num_threads()} threads, "
        f"median of {opts.repeat} runs"
        + (", without context descriptors" if opts.no_context else "")
        + "\n"
    )
    print(
        "| mchan | MFLOP/px | dense_maps s | "
        + " | ".join(f"extract {k} s" for k in pyramids)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(pyramids))
    for mchan in opts.mchan:
        torch.manual_seed(0)
        net = build_model("fast_r2d2", mchan=mchan).eval()
        x = torch.from_numpy(img)[None, None]
        t_dense = median_time(lambda net=net, x=x: net.dense_maps(x), opts.repeat)
        cells = []
        for scales in pyramids.values():
            cfg = ExtractConfig(progress=False, **({"scales": scales} if scales else {}))
            if opts.no_context:
                cfg = dataclasses.replace(cfg, context_scale=None)
            cells.append(
                median_time(lambda net=net, cfg=cfg: extract(net, img, None, cfg), opts.repeat)
            )
        print(
            f"| {mchan} | {flops_per_pixel(mchan=mchan) / 1e6:.3f} | {t_dense:.2f} | "
            + " | ".join(f"{c:.2f}" for c in cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
