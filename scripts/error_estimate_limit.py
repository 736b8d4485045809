"""How often can any error estimate be within 2x of the true error? A Monte-Carlo bound.

A fit corrected by the check's windows is an affine fitted by least squares to the residual
shifts of ``n`` windows on a grid over the overlap. Its true error (RMS at the moving image's
corners and centre, as :func:`sarreg.uncertainty.true_error`) is a random draw of the windows'
shift errors; its expectation is the RMS over the same points of ``sqrt(trace cov)`` of the
fit. This script draws the shift errors (Gaussian) many times and prints, per window layout:

- the mean of (true / exact expectation)^2, 1 by construction (a check of the simulation);
- the share of draws where the true error is outside [1/2, 2] x its exact expectation (the
  prediction that knows the true noise level);
- the least such share of any prediction, and the constant scaling of the expectation that
  attains it: the fit's error is independent of its residuals, so whatever a prediction
  computes from the data is independent of the true error, and none does better than the best
  constant multiple of the expectation;
- the chance, at that best, that every pair of a benchmark of 20 or 42 such pairs is within 2x;
- the share outside 2x of the expectation with the noise level taken from the fit's residuals
  (as sarreg does, before its factor for correlated windows).

``coverage``: the overlap's side as a share of the moving image's (corners outside the
windows' hull when < 1); ``rho``: correlation of the windows' shift errors (a common offset,
e.g. speckle or the sub-pixel peak's pull towards whole pixels).

    python scripts/error_estimate_limit.py [--draws 200000]
"""

from __future__ import annotations

import argparse

import numpy as np


def layout(n_side: int, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Window centres ``(n_side**2, 2)`` on a grid over a centred overlap of ``coverage`` x the
    moving image (a unit square, corners at 0 and 1) and the five points ``(5, 2)`` (corners
    and centre) where the error is stated."""
    lo, hi = 0.5 - coverage / 2, 0.5 + coverage / 2
    g = np.linspace(lo + coverage / (2 * n_side), hi - coverage / (2 * n_side), n_side)
    xy = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float)
    return xy, pts


def simulate(
    n_side: int, coverage: float, rho: float, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ratios true/predicted ``(draws,)`` for the oracle and the estimated-noise prediction."""
    from sarreg.geometry import _design

    xy, pts = layout(n_side, coverage)
    c = xy.mean(axis=0)
    sc = float(np.sqrt(((xy - c) ** 2).sum(axis=1).mean()))
    a = _design("affine", (xy - c) / sc).reshape(-1, 6)  # (2n, 6), rows x0, y0, x1, y1, ...
    b = _design("affine", (pts - c) / sc).reshape(-1, 6)  # (10, 6)
    n = len(xy)
    # shift errors: independent part and a common offset per axis, unit variance in all
    rng = np.random.default_rng(seed)
    e = np.sqrt(1 - rho) * rng.standard_normal((draws, 2 * n))
    e += np.sqrt(rho) * np.tile(rng.standard_normal((draws, 2)), n)
    pinv = np.linalg.pinv(a)  # (6, 2n)
    params = e @ pinv.T  # (draws, 6)
    err = (params @ b.T).reshape(draws, 5, 2)
    true = np.sqrt((err**2).sum(axis=2).mean(axis=1))
    cov_e = (1 - rho) * np.eye(2 * n) + rho * np.tile(np.eye(2), (n, n))
    cov = pinv @ cov_e @ pinv.T
    oracle = float(np.sqrt(np.einsum("kp,pq,kq->k", b, cov, b).reshape(5, 2).sum(1).mean()))
    resid = e - params @ a.T
    sigma = np.sqrt((resid**2).sum(axis=1) / (2 * n - 6))
    naive = float(np.sqrt(np.einsum("kp,pq,kq->k", b, np.linalg.inv(a.T @ a), b).sum() / 5))
    return true / oracle, true / (naive * sigma)


def outside(r: np.ndarray, c: float = 1.0) -> float:
    """Share of ratios ``r`` (true/predicted) outside [1/2, 2] once the prediction is scaled by
    ``c``."""
    q = r / c
    return float(np.mean((q < 0.5) | (q > 2.0)))


def best_scaling(r: np.ndarray) -> tuple[float, float]:
    """The constant scaling of the prediction with the least share outside 2x, and that
    share."""
    cs = np.exp(np.linspace(np.log(0.25), np.log(4.0), 161))
    shares = [outside(r, c) for c in cs]
    i = int(np.argmin(shares))
    return float(cs[i]), float(shares[i])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args()
    print(
        "| windows | coverage | rho | mean (true/expected)^2 | outside 2x, exact expectation "
        "| least outside 2x, any prediction (at scaling) | every one of 20 within 2x | of 42 "
        "| outside 2x, noise from residuals |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n_side, coverage, rho in [
        (4, 1.0, 0.0), (6, 1.0, 0.0), (8, 1.0, 0.0), (8, 0.5, 0.0), (8, 0.25, 0.0),
        (10, 1.0, 0.0), (8, 1.0, 0.3), (8, 0.5, 0.3),
    ]:  # fmt: skip
        oracle, estimated = simulate(n_side, coverage, rho, opts.draws, opts.seed)
        c, least = best_scaling(oracle)
        print(
            f"| {n_side * n_side} | {coverage:.2f} | {rho:.1f} | {np.mean(oracle**2):.3f} "
            f"| {outside(oracle):.3f} "
            f"| {least:.3f} ({c:.2f}) | {(1 - least) ** 20:.2f} | {(1 - least) ** 42:.2f} "
            f"| {outside(estimated):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
