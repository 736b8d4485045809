"""Predicted against true error of sarreg's registrations on pairs with known truth.

Pairs: the demo pair, the OPERA multi-date pairs (truth: identity) and a synthetic benchmark
(`sarreg evaluate synth`) from the bundled samples. Prints, per pair, the inlier RMSE (keypoint
scatter), the predicted error of the transform (report ``error_estimate.rms_px``) and the true
error (RMS over the moving image's corners and centre), and their ratio; refused pairs are
listed as such (counted as failures).

    python scripts/bench_error.py --n 12 --difficulty medium
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_verify import pairs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--difficulty", default="medium")
    ap.add_argument("--transform", default="affine")
    opts = ap.parse_args()
    from sarreg import io
    from sarreg.config import EstimateConfig
    from sarreg.errors import SarregError
    from sarreg.pipeline import RegisterConfig, register
    from sarreg.uncertainty import predicted_error, true_error

    print(
        f"{'pair':<12} {'inl':>5} {'scatter':>8} {'pred_px':>8} {'true_px':>8} {'ratio':>6}"
        f" {'verify':>8}"
    )
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ref, mov, truth in pairs(opts.n, opts.difficulty, Path(tmp)):
            cfg = RegisterConfig(estimate=EstimateConfig(transform=opts.transform), progress=False)
            try:
                res = register(ref, mov, None, cfg)
            except SarregError as err:
                print(f"{name:<12} refused: {err}")
                ratios.append(np.nan)
                continue
            shape = io.raster_info(str(mov)).shape
            est = res.report.get("error_estimate")
            if est is None:  # before the pipeline reports it
                tp = res.report["tie_points"]
                inl = [t for t in tp if t["inlier"]]
                est = predicted_error(
                    res.model,
                    np.array([t["mov_px"] for t in inl]),
                    np.array([t["ref_px"] for t in inl]),
                    shape,
                ).to_dict()
            pred = est["rms_px"]
            true = true_error(res.matrix, truth, shape)
            ver = (res.report.get("verification") or {}).get("verdict", "-")
            ratios.append(pred / true)
            print(
                f"{name:<12} {res.n_inliers:5d} {res.rmse:8.3f} {pred:8.3f} {true:8.3f} "
                f"{pred / true:6.2f} {ver:>8}"
            )
    r = np.array(ratios)
    ok = r[np.isfinite(r)]
    print(
        f"within a factor 2: {int(((ok >= 0.5) & (ok <= 2)).sum())} of {len(r)} pairs "
        f"({int((~np.isfinite(r)).sum())} refused); median ratio {np.median(ok):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
