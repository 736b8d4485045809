"""Non-linear pixel mappings (``poly2``, ``poly3``, ``tps``) fitted on tie points.

A scene whose distortion is not one affine (terrain, different orbits) is corrected by a
smooth mapping from moving pixel centres to reference pixel centres that is not a 3x3 matrix:

- ``poly2`` / ``poly3``: bivariate polynomials of degree 2 / 3 (6 / 10 terms per coordinate) in
  normalized moving coordinates, fitted by least squares;
- ``tps``: a thin-plate spline (``scipy.interpolate.RBFInterpolator``, kernel
  ``thin_plate_spline`` with an affine part), smoothed, with the smoothing chosen by 5-fold
  cross-validation; control points are thinned to at most ``TPS_MAX_POINTS`` spread over the
  scene.

Every mapping has ``forward(xy)`` (moving px -> reference px) and ``inverse(xy)`` (reference px
-> moving px, an inverse fit refined by Newton steps on ``forward``), both on ``(N, 2)`` float64
pixel centres (see docs/architecture.md), which is what :mod:`sarreg.warp` needs to resample in
windows. :func:`fit_mapping` returns a :class:`sarreg.geometry.TransformFit` whose ``matrix``
is the least-squares affine approximation (for summaries, plausibility checks and plots) and
whose ``mapping`` is the fitted mapping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarreg.errors import TooFewMatchesError

log = logging.getLogger(__name__)

NONLINEAR_MODELS = ("poly2", "poly3", "tps")
#: fewest inliers accepted per non-linear model (about twice the number of parameters)
MIN_POINTS = {"poly2": 12, "poly3": 20, "tps": 12}
#: thin-plate spline control points are thinned to at most this many
TPS_MAX_POINTS = 600
#: relative smoothing candidates for the thin-plate spline (chosen by cross-validation)
TPS_SMOOTHING = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
#: least-squares refit / inlier re-selection rounds
REFINE_ROUNDS = 10
#: RANSAC threshold multiplier of the affine pre-selection of inliers (the non-linear part of
#: the distortion must fit inside it)
PRESELECT_FACTOR = 4.0
#: Newton iterations of :meth:`Mapping.inverse`
NEWTON_STEPS = 4


def _poly_terms(u: np.ndarray, degree: int) -> np.ndarray:
    """Design matrix ``(N, T)`` of the monomials ``x^i y^j``, ``i + j <= degree``."""
    x, y = u[:, 0], u[:, 1]
    cols = [x**i * y ** (d - i) for d in range(degree + 1) for i in range(d, -1, -1)]
    return np.stack(cols, axis=1)


@dataclass
class _Normalizer:
    """Maps pixel coordinates to about [-1, 1]: ``(xy - centre) / scale``."""

    centre: np.ndarray  # (2,)
    scale: float

    @classmethod
    def of(cls, xy: np.ndarray) -> _Normalizer:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        return cls((lo + hi) / 2.0, float(max(1.0, (hi - lo).max() / 2.0)))

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return (xy - self.centre) / self.scale


@dataclass
class _Poly:
    """One polynomial map ``(N, 2) -> (N, 2)`` of a given degree in normalized coordinates."""

    degree: int
    norm: _Normalizer
    coef: np.ndarray  # (T, 2)

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray, degree: int) -> _Poly:
        norm = _Normalizer.of(src)
        a = _poly_terms(norm(src), degree)
        coef, *_ = np.linalg.lstsq(a, dst, rcond=None)
        return cls(degree, norm, coef)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        return _poly_terms(self.norm(xy), self.degree) @ self.coef


class _Tps:
    """Smoothed thin-plate spline ``(N, 2) -> (N, 2)`` with an affine part (scipy)."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, smoothing: float) -> None:
        from scipy.interpolate import RBFInterpolator

        self.norm = _Normalizer.of(src)
        self.n = len(src)
        self.smoothing = float(smoothing)
        self._rbf = RBFInterpolator(
            self.norm(src), dst, kernel="thin_plate_spline", degree=1, smoothing=smoothing
        )

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        out = np.empty((len(xy), 2))
        for i in range(0, len(xy), 20000):  # bound the (chunk x control points) kernel matrix
            out[i : i + 20000] = self._rbf(self.norm(xy[i : i + 20000]))
        return out


@dataclass
class Mapping:
    """A fitted non-linear mapping between moving and reference pixel centres.

    Attributes:
        model: 'poly2' | 'poly3' | 'tps'.
        params: JSON-friendly description (degree, coefficients or control points, smoothing).
    """

    model: str
    _fwd: Any = field(repr=False)
    _inv: Any = field(repr=False)
    params: dict = field(default_factory=dict)

    def forward(self, xy) -> np.ndarray:
        """Moving pixel centres ``(N, 2)`` -> reference pixel centres ``(N, 2)``."""
        return self._fwd(np.asarray(xy, dtype=np.float64).reshape(-1, 2))

    def inverse(self, xy, steps: int = NEWTON_STEPS) -> np.ndarray:
        """Reference pixel centres ``(N, 2)`` -> moving pixel centres ``(N, 2)``.

        The inverse fit gives a first guess, refined by Newton steps on :meth:`forward`
        (finite-difference Jacobian). Points where the refinement does not converge to 0.01 px
        (far outside the tie points, where the mapping may fold) are NaN.
        """
        target = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        u = self._inv(target)
        h = 0.5
        for _ in range(steps):
            f = self.forward(u)
            fx = self.forward(u + [h, 0.0])
            fy = self.forward(u + [0.0, h])
            j = np.stack([(fx - f) / h, (fy - f) / h], axis=2)  # (N, 2, 2): d f_i / d u_j
            r = target - f
            det = j[:, 0, 0] * j[:, 1, 1] - j[:, 0, 1] * j[:, 1, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                du0 = (j[:, 1, 1] * r[:, 0] - j[:, 0, 1] * r[:, 1]) / det
                du1 = (-j[:, 1, 0] * r[:, 0] + j[:, 0, 0] * r[:, 1]) / det
            u = u + np.stack([du0, du1], axis=1)
        err = np.hypot(*(self.forward(u) - target).T)
        u[~(err < 0.01)] = np.nan
        return u

    def to_dict(self) -> dict:
        """JSON-friendly description of the mapping."""
        return {"model": self.model, **self.params}


def _make(model: str, src: np.ndarray, dst: np.ndarray, smoothing: float | None) -> Mapping:
    """Fit ``model`` mapping ``src`` -> ``dst`` (and its inverse fit) on all given points."""
    if model in ("poly2", "poly3"):
        degree = int(model[-1])
        fwd = _Poly.fit(src, dst, degree)
        inv = _Poly.fit(dst, src, degree)
        params = {
            "degree": degree,
            "normalization": {"centre": fwd.norm.centre.tolist(), "scale": fwd.norm.scale},
            "coefficients_x": fwd.coef[:, 0].tolist(),
            "coefficients_y": fwd.coef[:, 1].tolist(),
            "terms": [f"x^{i} y^{d - i}" for d in range(degree + 1) for i in range(d, -1, -1)],
        }
        return Mapping(model, fwd, inv, params)
    s = TPS_SMOOTHING[2] if smoothing is None else smoothing
    fwd = _Tps(src, dst, s * len(src))
    inv = _Tps(dst, src, s * len(src))
    params = {"control_points": int(len(src)), "smoothing": float(s)}
    return Mapping(model, fwd, inv, params)


def thin_points(xy: np.ndarray, key: np.ndarray, n_max: int) -> np.ndarray:
    """Indices of at most ``n_max`` points spread over the scene: per cell of a grid, the point
    with the smallest ``key``; the grid is refined (cells halved) while that keeps at most
    ``n_max`` points, so clustered points (tiles) still give about ``n_max``. Sorted indices."""
    if len(xy) <= n_max:
        return np.arange(len(xy))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    best = None
    cells = max(1, int(np.sqrt(n_max)))
    while cells <= 4096:
        ij = np.minimum(((xy - lo) / span * cells).astype(int), cells - 1)
        cell = ij[:, 1] * cells + ij[:, 0]
        order = np.lexsort((key, cell))
        first = np.ones(len(order), dtype=bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        keep = order[first]
        if len(keep) > n_max:
            if best is None:  # even the coarsest grid gives too many: keep the best keys
                best = keep[np.argsort(key[keep], kind="stable")[:n_max]]
            break
        best = keep
        cells *= 2
    return np.sort(best)


def _tps_smoothing(src: np.ndarray, dst: np.ndarray, seed: int) -> float:
    """Relative smoothing with the lowest 5-fold cross-validated error."""
    folds = np.random.default_rng(seed).permutation(len(src)) % 5
    best, best_err = TPS_SMOOTHING[2], np.inf
    for s in TPS_SMOOTHING:
        err = 0.0
        for k in range(5):
            test = folds == k
            m = _Tps(src[~test], dst[~test], s * int((~test).sum()))
            err += float(((m(src[test]) - dst[test]) ** 2).sum())
        if err < best_err:
            best, best_err = s, err
    return best


def _loo(model: str, src: np.ndarray, dst: np.ndarray, mapping: Mapping, seed: int) -> float:
    """Leave-one-out RMSE (polynomials: closed form from the hat matrix; tps: 5-fold CV)."""
    n = len(src)
    if model in ("poly2", "poly3"):
        a = _poly_terms(mapping._fwd.norm(src), int(model[-1]))
        if n <= a.shape[1]:
            return float("nan")
        h = np.einsum("ij,jk,ik->i", a, np.linalg.pinv(a.T @ a), a)
        e = (dst - mapping.forward(src)) / np.maximum(1.0 - h, 1e-9)[:, None]
        return float(np.sqrt((e**2).sum(axis=1).mean()))
    folds = np.random.default_rng(seed).permutation(n) % 5
    err = 0.0
    for k in range(5):
        test = folds == k
        m = _Tps(src[~test], dst[~test], mapping.params["smoothing"] * int((~test).sum()))
        err += float(((m(src[test]) - dst[test]) ** 2).sum())
    return float(np.sqrt(err / n))


def fit_mapping(
    xy_mov,
    xy_ref,
    model: str,
    threshold: float = 3.0,
    seed: int = 0,
    initial_inliers: np.ndarray | None = None,
):
    """Robustly fit a non-linear mapping moving -> reference pixel centres.

    Args:
        xy_mov, xy_ref: ``(N, 2)`` matching pixel centres.
        model: 'poly2' | 'poly3' | 'tps'.
        threshold: inlier threshold, reference pixels.
        seed: RANSAC / cross-validation seed.
        initial_inliers: ``(N,)`` bool first inlier set (e.g. the union of per-tile RANSAC
            inliers); default: an affine RANSAC with ``PRESELECT_FACTOR * threshold``.

    Then least-squares fits alternate with re-selecting inliers at ``threshold`` (for ``tps``
    the inliers are selected with ``poly3`` at ``2 * threshold`` first, as a spline follows its
    outliers). Returns a :class:`sarreg.geometry.TransformFit` with ``mapping`` set and
    ``matrix`` = least-squares affine over the inliers.

    Raises:
        TooFewMatchesError: fewer than ``MIN_POINTS[model]`` inliers.
    """
    from sarreg import geometry

    if model not in NONLINEAR_MODELS:
        raise ValueError(f"unknown non-linear model {model!r}; expected one of {NONLINEAR_MODELS}")
    src = np.asarray(xy_mov, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(xy_ref, dtype=np.float64).reshape(-1, 2)
    need = MIN_POINTS[model]
    if len(src) < need:
        raise TooFewMatchesError(
            f"only {len(src)} matches for a {model} transform (need >= {need})",
            "try --transform affine, or more/larger --tiles",
        )
    if initial_inliers is None:
        pre = geometry.fit_transform(
            src, dst, "affine", threshold=PRESELECT_FACTOR * threshold, seed=seed
        )
        inl = pre.inliers.copy()
    else:
        inl = np.asarray(initial_inliers, dtype=bool).copy()
    select_model = "poly3" if model == "tps" else model
    select_thr = 2.0 * threshold if model == "tps" else threshold
    for _ in range(REFINE_ROUNDS):
        if inl.sum() < need:
            break
        m = _make(select_model, src[inl], dst[inl], None)
        new = np.hypot(*(m.forward(src) - dst).T) <= select_thr
        if new.sum() < need or np.array_equal(new, inl):
            inl = new if new.sum() >= need else inl
            break
        inl = new
    if inl.sum() < need:
        raise TooFewMatchesError(
            f"only {int(inl.sum())} inlier matches for a {model} transform (need >= {need})",
            "try --transform affine, or more/larger --tiles",
        )
    if model == "tps":
        res_poly = np.hypot(*(_make("poly3", src[inl], dst[inl], None).forward(src) - dst).T)
        idx = np.flatnonzero(inl)[thin_points(src[inl], res_poly[inl], TPS_MAX_POINTS)]
        smoothing = _tps_smoothing(src[idx], dst[idx], seed)
        mapping = _make("tps", src[idx], dst[idx], smoothing)
        fit_src, fit_dst = src[idx], dst[idx]
    else:
        mapping = _make(model, src[inl], dst[inl], None)
        fit_src, fit_dst = src[inl], dst[inl]
    res = np.hypot(*(mapping.forward(src) - dst).T)
    inl = res <= threshold
    if inl.sum() < need:
        raise TooFewMatchesError(
            f"only {int(inl.sum())} inlier matches for a {model} transform (need >= {need})",
            "try --transform affine, or more/larger --tiles",
        )
    matrix, _ = geometry._lstsq_linear("affine", src[inl], dst[inl])
    rmse = float(np.sqrt(np.mean(res[inl] ** 2)))
    loo = _loo(model, fit_src, fit_dst, mapping, seed)
    log.debug("%s fit: %d/%d inliers, rmse %.3f px, loo %.3f px", model, inl.sum(), len(src),
              rmse, loo)  # fmt: skip
    return geometry.TransformFit(
        model=model,
        matrix=matrix,
        inliers=inl,
        n_inliers=int(inl.sum()),
        rmse=rmse,
        loo_rmse=loo,
        residuals=res,
        threshold=float(threshold),
        mapping=mapping,
    )
