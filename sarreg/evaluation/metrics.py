"""Evaluation metrics: matching accuracy, repeatability and registration error.

Conventions: points are ``(x, y)`` pixel centres, ``(N, 2)`` float arrays; a ground truth is a
callable ``gt(xy_mov (N, 2)) -> xy_ref (N, 2)`` (NaN where it is undefined), such as
:meth:`sarreg.evaluation.bench.GroundTruth.map`.

- **MMA@t** (HPatches protocol of D2-Net / R2D2): the fraction of a pair's matches whose
  reference keypoint lies within ``t`` px of the ground-truth image of its moving keypoint.
  A match whose moving keypoint has no ground truth counts as wrong; a pair without matches
  scores 0. :func:`mma_curve` gives one pair's curve; averaging over pairs is the caller's.
- **Repeatability@t**: keypoints of both images inside the common area; a moving keypoint is
  repeated when its ground-truth image lies within ``t`` px of a reference keypoint, counted
  one to one (mutual nearest neighbours in position); the count is divided by the smaller of
  the two keypoint numbers (Mikolajczyk et al.).
- **Registration RMSE**: root mean square distance between the estimated and the
  ground-truth images of a regular grid of moving pixel centres inside the overlap; ``inf``
  for a failed registration. **Success@t**: RMSE <= t.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

THRESHOLDS: tuple[int, ...] = tuple(range(1, 11))
SUCCESS_THRESHOLDS: tuple[float, ...] = (1.0, 3.0, 5.0)

GroundTruthFn = Callable[[np.ndarray], np.ndarray]


def match_errors(xy_ref: np.ndarray, xy_mov: np.ndarray, gt: GroundTruthFn) -> np.ndarray:
    """Reprojection error ``(N,)`` of matches ``xy_ref (N, 2)`` <-> ``xy_mov (N, 2)`` in
    reference px: ``|gt(xy_mov) - xy_ref|``; ``inf`` where the ground truth is undefined."""
    r = np.asarray(xy_ref, np.float64).reshape(-1, 2)
    m = np.asarray(xy_mov, np.float64).reshape(-1, 2)
    if len(r) != len(m):
        raise ValueError(f"xy_ref has {len(r)} points, xy_mov {len(m)}")
    if len(r) == 0:
        return np.zeros(0)
    err = np.linalg.norm(np.asarray(gt(m), np.float64) - r, axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def mma_curve(errors: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """MMA of one pair at each threshold ``(T,)``: fraction of ``errors (N,)`` <= t; 0 if N = 0."""
    e = np.asarray(errors, np.float64).reshape(-1)
    t = np.asarray(thresholds, np.float64)
    if e.size == 0:
        return np.zeros(t.shape)
    return (e[None, :] <= t[:, None]).mean(axis=1)


def repeatability(
    kp_ref: np.ndarray,
    kp_mov: np.ndarray,
    gt: GroundTruthFn,
    ref_overlap: np.ndarray,
    mov_overlap: np.ndarray,
    threshold: float = 3.0,
) -> float:
    """Repeatability of keypoints ``(N_r, 2)``, ``(N_m, 2)`` at ``threshold`` px (see the module
    docstring). ``ref_overlap`` / ``mov_overlap``: ``(H, W)`` bool common-area masks of each
    image. Returns ``nan`` when either image has no keypoint in the overlap."""
    r = _inside(np.asarray(kp_ref, np.float64).reshape(-1, 2), ref_overlap)
    m = _inside(np.asarray(kp_mov, np.float64).reshape(-1, 2), mov_overlap)
    if len(r) == 0 or len(m) == 0:
        return float("nan")
    p = np.asarray(gt(m), np.float64)
    ok = np.all(np.isfinite(p), axis=1)
    p = p[ok]
    if len(p) == 0:
        return 0.0
    n = _mutual_within(p, r, threshold)
    return float(n / min(len(r), len(m)))


def _inside(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    ix = np.rint(xy[:, 0]).astype(np.int64)
    iy = np.rint(xy[:, 1]).astype(np.int64)
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    ok[ok] = mask[iy[ok], ix[ok]]
    return xy[ok]


def _mutual_within(a: np.ndarray, b: np.ndarray, threshold: float, chunk: int = 2048) -> int:
    """Number of mutual nearest neighbours (Euclidean) between ``a`` and ``b`` within
    ``threshold``."""
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    nn_ab = torch.empty(len(a), dtype=torch.long)
    d_ab = torch.empty(len(a), dtype=torch.float64)
    for i in range(0, len(a), chunk):
        d = torch.cdist(ta[i : i + chunk], tb)
        d_ab[i : i + chunk], nn_ab[i : i + chunk] = d.min(dim=1)
    nn_ba = torch.empty(len(b), dtype=torch.long)
    for j in range(0, len(b), chunk):
        nn_ba[j : j + chunk] = torch.cdist(tb[j : j + chunk], ta).argmin(dim=1)
    mutual = nn_ba[nn_ab] == torch.arange(len(a))
    return int((mutual & (d_ab <= threshold)).sum())


def grid_points(mask: np.ndarray, step: int = 8) -> np.ndarray:
    """Pixel centres ``(N, 2)`` of a regular grid (every ``step`` px) inside ``mask (H, W)``."""
    h, w = mask.shape
    off = step // 2
    ys, xs = np.mgrid[off:h:step, off:w:step]
    keep = mask[ys, xs]
    return np.stack([xs[keep], ys[keep]], axis=1).astype(np.float64)


def registration_rmse(estimate: np.ndarray | None, gt: GroundTruthFn, points: np.ndarray) -> float:
    """RMSE (reference px) between the estimated 3x3 mapping and the ground truth over moving
    ``points (N, 2)``; ``inf`` for a failed registration (``estimate`` None or not finite) or
    an empty point set; ground-truth-less points are left out."""
    from sarreg.geometry import apply_matrix

    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if estimate is None or len(pts) == 0:
        return float("inf")
    m = np.asarray(estimate, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        return float("inf")
    truth = np.asarray(gt(pts), np.float64)
    ok = np.all(np.isfinite(truth), axis=1)
    if not ok.any():
        return float("inf")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        est = apply_matrix(m, pts[ok])
        d2 = np.sum((est - truth[ok]) ** 2, axis=1)
        value = float(np.sqrt(np.mean(d2)))
    return value if np.isfinite(value) else float("inf")


def success_rates(
    rmses: Sequence[float], thresholds: Sequence[float] = SUCCESS_THRESHOLDS
) -> dict[float, float]:
    """Fraction of pairs with RMSE <= t for each t (failures are ``inf``, so they count)."""
    r = np.asarray(list(rmses), np.float64)
    if r.size == 0:
        return {float(t): 0.0 for t in thresholds}
    r = np.where(np.isnan(r), np.inf, r)
    return {float(t): float(np.mean(r <= t)) for t in thresholds}
