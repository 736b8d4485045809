"""Transform estimation and georeferencing geometry.

Conventions (see docs/architecture.md):

- Pixel coordinates are ``(x, y)`` = (column, row) of pixel **centres**, the centre of the
  top-left pixel at ``(0, 0)``; point arrays have shape ``(N, 2)``.
- A rasterio ``Affine`` maps pixel **corners**: the map position of pixel centre ``(x, y)`` is
  ``transform * (x + 0.5, y + 0.5)``. :func:`pixel_to_map` / :func:`map_to_pixel` are the only
  place where this half-pixel shift is applied.
- A pixel transform is a 3x3 float64 matrix ``M`` mapping **moving** pixel centres to
  **reference** pixel centres: ``[x_ref, y_ref, 1]^T ~ M @ [x_mov, y_mov, 1]^T``.

Transform models and the fewest RANSAC inliers accepted for each (about twice the minimal
sample, so that the least-squares refit and the leave-one-out error are over-determined):

=============  ==========  ==============  ===============
model          parameters  minimal sample  ``MIN_INLIERS``
=============  ==========  ==============  ===============
translation    2           1               3
similarity     4           2               4
affine         6           3               6
homography     8           4               8
=============  ==========  ==============  ===============

Robust estimation uses OpenCV's USAC MAGSAC++ where this OpenCV supports it (affine:
``cv2.estimateAffine2D``, homography: ``cv2.findHomography``). OpenCV 5.0 rejects USAC methods in
``cv2.estimateAffinePartial2D`` (similarity) and ``cv2.estimateTranslation2D`` (translation), so
those two use OpenCV's classic RANSAC, seeded through ``cv2.setRNGSeed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon

from sarreg.errors import (
    DegenerateTransformError,
    NoOverlapError,
    NotGeoreferencedError,
    TooFewMatchesError,
)

log = logging.getLogger(__name__)

MODELS = ("translation", "similarity", "affine", "homography")
#: fewest inliers accepted per model (see the module docstring)
MIN_INLIERS = {"translation": 3, "similarity": 4, "affine": 6, "homography": 8}
#: the next simpler model, suggested when a model has too few inliers
_SIMPLER = {"homography": "affine", "affine": "similarity", "similarity": "translation"}
#: explicit leave-one-out refits for homographies are capped at this many points
LOO_MAX_REFITS = 200
#: least-squares refit / inlier re-selection rounds after RANSAC
REFINE_ROUNDS = 5


@dataclass
class TransformFit:
    """Result of :func:`fit_transform`.

    Attributes:
        model: one of :data:`MODELS`.
        matrix: ``(3, 3)`` float64, moving pixel centre -> reference pixel centre.
        inliers: ``(N,)`` bool, residual <= threshold after the least-squares refit.
        n_inliers: ``inliers.sum()``.
        rmse: root mean square residual over the inliers, reference pixels.
        loo_rmse: leave-one-out RMSE over the inliers (each inlier predicted by a fit to the
            other inliers), reference pixels; an honest estimate of the registration error at
            the tie points. ``nan`` when undefined.
        residuals: ``(N,)`` float64 Euclidean residual of every match, reference pixels.
        threshold: the inlier threshold used, reference pixels.
        mapping: for the non-linear models of :mod:`sarreg.mapping` ('poly2', 'poly3', 'tps')
            the fitted :class:`sarreg.mapping.Mapping` (``matrix`` is then its least-squares
            affine approximation); ``None`` for the 3x3 models.
    """

    model: str
    matrix: np.ndarray
    inliers: np.ndarray
    n_inliers: int
    rmse: float
    loo_rmse: float
    residuals: np.ndarray
    threshold: float
    mapping: Any = None


@dataclass(frozen=True)
class ScaleRotation:
    """Human-readable summary of the linear part of a pixel transform (for reports).

    ``scale`` = sqrt(|det|); ``scale_x``/``scale_y`` = lengths of the images of the unit x / y
    vectors; ``rotation_deg`` = angle of the closest rotation, counter-clockwise in (x right,
    y down) pixel axes, i.e. clockwise on screen; ``shear`` = cosine of the angle between the
    images of the x and y axes (0 = none); ``tx``, ``ty`` = image of the pixel (0, 0) minus (0, 0).
    For a homography, the linear part is the Jacobian at pixel (0, 0).
    """

    scale: float
    scale_x: float
    scale_y: float
    rotation_deg: float
    shear: float
    tx: float
    ty: float


# ---------------------------------------------------------------------------------------------
# small matrix helpers


def _as_points(xy, name: str = "xy") -> np.ndarray:
    """``xy`` as a float64 ``(N, 2)`` array."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {pts.shape}")
    return pts


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown transform model {model!r}; expected one of {MODELS}")


def min_inliers(model: str) -> int:
    """Fewest matches / RANSAC inliers accepted for ``model`` (see the module docstring)."""
    _check_model(model)
    return MIN_INLIERS[model]


def apply_matrix(matrix: np.ndarray, xy) -> np.ndarray:
    """Apply a 3x3 pixel transform to points ``(N, 2)`` -> ``(N, 2)`` float64 (homogeneous)."""
    m = np.asarray(matrix, dtype=np.float64)
    pts = _as_points(xy)
    out = pts @ m[:2, :2].T + m[:2, 2]
    w = pts @ m[2, :2] + m[2, 2]
    return out / w[:, None]


def similarity_about_centre(
    shape: tuple[int, int], rotation_deg: float, scale: float, shift: tuple[float, float]
) -> np.ndarray:
    """3x3 matrix rotating (counter-clockwise in x right / y down) and scaling pixel centres
    about the centre of an ``(H, W)`` image, then shifting by ``shift`` = (dx, dy) pixels."""
    h, w = shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    a = np.deg2rad(rotation_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = c - r @ c + np.asarray(shift, dtype=np.float64)
    return m


def mapping_rmse(
    matrix: np.ndarray, truth: np.ndarray, shape: tuple[int, int], step: int = 16
) -> float:
    """RMSE in pixels between two 3x3 mappings over a grid (every ``step`` px) of an ``(H, W)``
    image's pixel centres: the registration error of ``matrix`` against ``truth``."""
    h, w = shape
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    d = apply_matrix(matrix, pts) - apply_matrix(truth, pts)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def _jacobian(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Jacobians ``(N, 2, 2)`` of the 3x3 transform at points ``(N, 2)``."""
    m = np.asarray(matrix, dtype=np.float64)
    w = xy @ m[2, :2] + m[2, 2]
    u = apply_matrix(m, xy)
    # d(u)/d(x) = (A - u * h^T) / w with A = m[:2, :2], h = m[2, :2]
    return (m[None, :2, :2] - u[:, :, None] * m[None, None, 2, :2]) / w[:, None, None]


def matrix_scale_rotation(matrix: np.ndarray) -> tuple[float, float]:
    """``(scale, rotation_deg)`` of a 3x3 pixel transform, as defined in ScaleRotation."""
    d = decompose_matrix(matrix)
    return d.scale, d.rotation_deg


def decompose_matrix(matrix: np.ndarray) -> ScaleRotation:
    """Scale, rotation, shear and translation of a 3x3 pixel transform (see ScaleRotation)."""
    m = np.asarray(matrix, dtype=np.float64)
    origin = np.zeros((1, 2))
    a = _jacobian(m, origin)[0]
    t = apply_matrix(m, origin)[0]
    sx = float(np.hypot(a[0, 0], a[1, 0]))
    sy = float(np.hypot(a[0, 1], a[1, 1]))
    shear = float((a[0, 0] * a[0, 1] + a[1, 0] * a[1, 1]) / (sx * sy)) if sx * sy > 0 else 0.0
    rot = float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    return ScaleRotation(
        scale=float(np.sqrt(abs(np.linalg.det(a)))),
        scale_x=sx,
        scale_y=sy,
        rotation_deg=rot,
        shear=shear,
        tx=float(t[0]),
        ty=float(t[1]),
    )


# ---------------------------------------------------------------------------------------------
# linear least squares for translation / similarity / affine


def _design(model: str, xy: np.ndarray) -> np.ndarray:
    """Design matrix ``(N, 2, p)``: row 0 predicts x, row 1 predicts y of each point.

    Parameters: translation (tx, ty) with ``x' = x + tx``; similarity (a, b, tx, ty) with
    ``x' = a x - b y + tx, y' = b x + a y + ty``; affine (m00, m01, m02, m10, m11, m12).
    """
    n = xy.shape[0]
    x, y = xy[:, 0], xy[:, 1]
    one, zero = np.ones(n), np.zeros(n)
    if model == "translation":
        rows = [[one, zero], [zero, one]]
    elif model == "similarity":
        rows = [[x, -y, one, zero], [y, x, zero, one]]
    elif model == "affine":
        rows = [[x, y, one, zero, zero, zero], [zero, zero, zero, x, y, one]]
    else:
        raise ValueError(f"no linear design for model {model!r}")
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=1)


def _params_to_matrix(model: str, p: np.ndarray) -> np.ndarray:
    """3x3 matrix from the parameter vector of :func:`_design`."""
    m = np.eye(3)
    if model == "translation":
        m[0, 2], m[1, 2] = p
    elif model == "similarity":
        a, b, tx, ty = p
        m[:2] = [[a, -b, tx], [b, a, ty]]
    else:
        m[:2] = p.reshape(2, 3)
    return m


def _normalizer(xy: np.ndarray) -> np.ndarray:
    """Similarity ``T`` (3x3) moving the centroid to 0 and the mean distance to sqrt(2)."""
    c = xy.mean(axis=0)
    d = np.sqrt(((xy - c) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def _lstsq_linear(
    model: str, src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares fit of a linear model; returns (matrix 3x3, hat blocks (N,2,2)).

    Both point sets are normalized by the same similarity ``T`` (Hartley, from ``src``) for
    conditioning; ``T^-1 X T`` stays in each model family, so the fitted transform and the hat
    matrix are unchanged by it and the hat blocks ``H_ii`` give the leave-one-out residuals
    ``(I - H_ii)^-1 e_i`` of the original problem.
    """
    n = src.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    ts = td = _normalizer(src)
    s = apply_matrix(ts, src)
    d = apply_matrix(td, dst)
    a = _design(model, s)  # (N, 2, p)
    p = a.shape[-1]
    a2 = a.reshape(2 * n, p)
    w2 = np.repeat(w, 2)
    ata = a2.T @ (a2 * w2[:, None])
    if model == "translation":  # x' = x + tx: the identity part is not a parameter
        d = d - s
    atb = a2.T @ (w2 * d.reshape(-1))
    inv = np.linalg.pinv(ata)
    params = inv @ atb
    m = np.linalg.inv(td) @ _params_to_matrix(model, params) @ ts
    hat = np.einsum("nip,pq,njq->nij", a, inv, a) * w[:, None, None]
    return m / m[2, 2], hat


def _loo_linear(model: str, src: np.ndarray, dst: np.ndarray, w: np.ndarray | None) -> float:
    """Leave-one-out RMSE in closed form from the hat matrix of the least-squares fit."""
    n = src.shape[0]
    if 2 * (n - 1) < _design(model, src[:1]).shape[-1]:
        return float("nan")
    m, hat = _lstsq_linear(model, src, dst, w)
    e = dst - apply_matrix(m, src)
    eye = np.eye(2)[None]
    try:
        loo = np.linalg.solve(eye - hat, e[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        return float("nan")
    if not np.all(np.isfinite(loo)):
        return float("nan")
    return float(np.sqrt((loo**2).sum(axis=1).mean()))


# ---------------------------------------------------------------------------------------------
# homography least squares


def _lstsq_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """All-points homography (DLT + Levenberg-Marquardt, ``cv2.findHomography(method=0)``)."""
    h, _ = cv2.findHomography(src.astype(np.float64), dst.astype(np.float64), 0)
    if h is None or not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    return h / h[2, 2]


def _loo_homography(src: np.ndarray, dst: np.ndarray, seed: int) -> float:
    """Leave-one-out RMSE by explicit refits, at most ``LOO_MAX_REFITS`` (seeded) points."""
    n = src.shape[0]
    if n <= 4:
        return float("nan")
    idx = np.arange(n)
    if n > LOO_MAX_REFITS:
        idx = np.sort(np.random.default_rng(seed).choice(n, LOO_MAX_REFITS, replace=False))
    keep = np.ones(n, dtype=bool)
    errs = []
    for i in idx:
        keep[i] = False
        h = _lstsq_homography(src[keep], dst[keep])
        keep[i] = True
        if h is None:
            return float("nan")
        errs.append(((apply_matrix(h, src[i : i + 1]) - dst[i]) ** 2).sum())
    return float(np.sqrt(np.mean(errs)))


# ---------------------------------------------------------------------------------------------
# robust fit


def _too_few(n: int, model: str, what: str) -> TooFewMatchesError:
    need = MIN_INLIERS[model]
    simpler = _SIMPLER.get(model)
    hint = "try "
    if simpler:
        hint += f"--transform {simpler}, "
    hint += "a lower --min-similarity, or check that the images overlap"
    return TooFewMatchesError(
        f"only {n} {what} for {'an' if model[0] in 'aeiou' else 'a'} {model} transform "
        f"(need >= {need})",
        hint,
    )


def _ransac(
    model: str,
    src: np.ndarray,
    dst: np.ndarray,
    threshold: float,
    confidence: float,
    max_iters: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """OpenCV robust estimate: (3x3 matrix or None, inlier mask (N,) bool)."""
    s = np.ascontiguousarray(src, dtype=np.float64)
    d = np.ascontiguousarray(dst, dtype=np.float64)
    n = s.shape[0]
    if model == "translation":
        t, mask = cv2.estimateTranslation2D(
            s, d, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=max_iters,
            confidence=confidence, refineIters=0,
        )  # fmt: skip
        m = None if not np.all(np.isfinite(t)) else _params_to_matrix(model, np.asarray(t))
    elif model == "similarity":
        a, mask = cv2.estimateAffinePartial2D(
            s, d, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=max_iters,
            confidence=confidence, refineIters=0,
        )  # fmt: skip
        m = None if a is None else np.vstack([a, [0.0, 0.0, 1.0]])
    elif model == "affine":
        a, mask = cv2.estimateAffine2D(
            s, d, method=cv2.USAC_MAGSAC, ransacReprojThreshold=threshold, maxIters=max_iters,
            confidence=confidence, refineIters=0,
        )  # fmt: skip
        m = None if a is None else np.vstack([a, [0.0, 0.0, 1.0]])
    else:
        m, mask = cv2.findHomography(
            s, d, cv2.USAC_MAGSAC, threshold, maxIters=max_iters, confidence=confidence
        )
    inl = np.zeros(n, dtype=bool) if mask is None else np.asarray(mask).reshape(-1).astype(bool)
    if m is not None and (not np.all(np.isfinite(m)) or m.size != 9):
        m = None
    return m, inl


def _refit(model: str, src: np.ndarray, dst: np.ndarray, w: np.ndarray | None) -> np.ndarray | None:
    """Least-squares fit of ``model`` to all given points (weights ignored for homography)."""
    if model == "homography":
        return _lstsq_homography(src, dst)
    m, _ = _lstsq_linear(model, src, dst, w)
    return m if np.all(np.isfinite(m)) else None


def residuals(matrix: np.ndarray, xy_mov, xy_ref) -> np.ndarray:
    """Euclidean residuals ``(N,)`` in reference pixels of ``matrix`` on the matches."""
    return np.sqrt(((apply_matrix(matrix, xy_mov) - _as_points(xy_ref)) ** 2).sum(axis=1))


def fit_transform(
    xy_mov,
    xy_ref,
    model: str = "affine",
    threshold: float = 3.0,
    confidence: float = 0.9999,
    max_iters: int = 10000,
    seed: int = 0,
    weights=None,
) -> TransformFit:
    """Robustly fit a pixel transform mapping moving to reference keypoints.

    RANSAC (USAC MAGSAC++ / classic RANSAC, see the module docstring) finds the consensus set,
    then a least-squares fit on the inliers is alternated with re-selecting the inliers at
    ``threshold`` (at most ``REFINE_ROUNDS`` times, until the inlier set no longer changes).

    Args:
        xy_mov: ``(N, 2)`` moving keypoints, pixel centres.
        xy_ref: ``(N, 2)`` matching reference keypoints, pixel centres.
        model: one of :data:`MODELS`.
        threshold: inlier threshold, reference pixels.
        confidence: RANSAC confidence.
        max_iters: RANSAC iteration cap.
        seed: OpenCV RNG seed (``cv2.setRNGSeed``) and seed of the leave-one-out subset.
        weights: optional ``(N,)`` non-negative weights for the least-squares refit (e.g. match
            similarities); not used by RANSAC nor for homographies.

    Raises:
        TooFewMatchesError: fewer than ``MIN_INLIERS[model]`` matches or inliers.
    """
    _check_model(model)
    src = _as_points(xy_mov, "xy_mov")
    dst = _as_points(xy_ref, "xy_ref")
    if src.shape != dst.shape:
        raise ValueError(f"xy_mov {src.shape} and xy_ref {dst.shape} differ in shape")
    if threshold <= 0:
        raise ValueError("threshold must be positive")
    n = src.shape[0]
    need = MIN_INLIERS[model]
    if n < need:
        raise _too_few(n, model, "matches")
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w is not None and (w.shape[0] != n or np.any(w < 0) or not np.all(np.isfinite(w))):
        raise ValueError("weights must be (N,) finite and non-negative")

    cv2.setRNGSeed(int(seed))
    m, inl = _ransac(model, src, dst, threshold, confidence, max_iters)
    if m is None or inl.sum() < need:
        raise _too_few(int(inl.sum()) if m is not None else 0, model, "inlier matches")

    for _ in range(REFINE_ROUNDS):
        m_new = _refit(model, src[inl], dst[inl], None if w is None else w[inl])
        if m_new is None:
            break
        new_inl = residuals(m_new, src, dst) <= threshold
        if new_inl.sum() < need:
            break
        m = m_new
        if np.array_equal(new_inl, inl):
            break
        inl = new_inl
    res = residuals(m, src, dst)
    inl = res <= threshold
    k = int(inl.sum())
    if k < need:
        raise _too_few(k, model, "inlier matches")
    rmse = float(np.sqrt(np.mean(res[inl] ** 2)))
    if model == "homography":
        loo = _loo_homography(src[inl], dst[inl], seed)
    else:
        loo = _loo_linear(model, src[inl], dst[inl], None if w is None else w[inl])
    log.debug("%s fit: %d/%d inliers, rmse %.3f px, loo %.3f px", model, k, n, rmse, loo)
    return TransformFit(
        model=model,
        matrix=m,
        inliers=inl,
        n_inliers=k,
        rmse=rmse,
        loo_rmse=loo,
        residuals=res,
        threshold=float(threshold),
    )


def check_plausible(
    matrix: np.ndarray,
    model: str = "affine",
    scale_range: tuple[float, float] = (0.1, 10.0),
    shape: tuple[int, int] | None = None,
    max_perspective: float = 0.5,
    allow_reflection: bool = False,
) -> None:
    """Reject a transform that cannot be a real image-to-image mapping.

    Checks: finite entries; non-singular and orientation-preserving (no reflection, unless
    ``allow_reflection``); both
    singular values of the local linear part within ``scale_range``; for homographies also
    that the projective denominator keeps its sign over the moving image and varies by at most
    ``max_perspective`` (relative) between its corners. Linear parts are evaluated at the corners
    and centre of the moving image of ``shape`` ``(H, W)`` (4096 x 4096 when not given).

    Raises:
        DegenerateTransformError
    """
    _check_model(model)
    m = np.asarray(matrix, dtype=np.float64)
    fix = "check the inputs or try a simpler --transform, e.g. similarity"
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise DegenerateTransformError("the estimated transform has non-finite entries", fix)
    h, w = shape if shape is not None else (4096, 4096)
    pts = np.array(
        [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [(w - 1) / 2, (h - 1) / 2]], float
    )
    denom = pts @ m[2, :2] + m[2, 2]
    if abs(m[2, 2]) < 1e-12 or np.any(denom * np.sign(m[2, 2]) <= 0):
        raise DegenerateTransformError(
            "the estimated transform maps part of the image to infinity", fix
        )
    if model == "homography":
        d = np.abs(denom)
        if d.max() / d.min() > 1.0 + max_perspective:
            raise DegenerateTransformError(
                f"the estimated homography has strong perspective (scale varies "
                f"{d.max() / d.min():.2f}x across the image)",
                fix,
            )
    jac = _jacobian(m, pts)
    dets = np.linalg.det(jac)
    sv = np.linalg.svd(jac, compute_uv=False)
    if np.any(np.abs(dets) < 1e-12) or np.any(sv[:, -1] < 1e-9):
        raise DegenerateTransformError("the estimated transform is singular", fix)
    if allow_reflection and np.all(dets < 0):
        dets = -dets
    if np.any(dets < 0):
        raise DegenerateTransformError(
            "the estimated transform is mirrored (reflection)",
            "if the images are mirrored (e.g. ascending against descending pass), pass "
            "--allow-reflection; else " + fix,
        )
    lo, hi = scale_range
    if sv.min() < lo or sv.max() > hi:
        raise DegenerateTransformError(
            f"the estimated transform scales by {sv.min():.3g}..{sv.max():.3g}, outside "
            f"{lo:g}..{hi:g}",
            "check that both images show the same area at similar resolution, or try a "
            "simpler --transform",
        )


# ---------------------------------------------------------------------------------------------
# georeferencing


def pixel_to_map(transform: Affine, xy) -> np.ndarray:
    """Pixel centres ``(N, 2)`` -> map coordinates ``(N, 2)``: ``transform * (x+0.5, y+0.5)``."""
    pts = _as_points(xy) + 0.5
    t = transform
    xs = t.a * pts[:, 0] + t.b * pts[:, 1] + t.c
    ys = t.d * pts[:, 0] + t.e * pts[:, 1] + t.f
    return np.stack([xs, ys], axis=1)


def map_to_pixel(transform: Affine, xy_map) -> np.ndarray:
    """Map coordinates ``(N, 2)`` -> pixel centres ``(N, 2)`` (inverse of pixel_to_map)."""
    inv = ~transform
    pts = _as_points(xy_map, "xy_map")
    xs = inv.a * pts[:, 0] + inv.b * pts[:, 1] + inv.c
    ys = inv.d * pts[:, 0] + inv.e * pts[:, 1] + inv.f
    return np.stack([xs, ys], axis=1) - 0.5


def _same_crs(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b


def reproject_xy(xy_map, src_crs, dst_crs) -> np.ndarray:
    """Map coordinates ``(N, 2)`` from ``src_crs`` to ``dst_crs`` (rasterio.warp.transform).

    Identity when the CRSs are equal (or both None).

    Raises:
        NotGeoreferencedError: exactly one of the CRSs is None.
    """
    pts = _as_points(xy_map, "xy_map")
    if _same_crs(src_crs, dst_crs):
        return pts.copy()
    if src_crs is None or dst_crs is None:
        raise NotGeoreferencedError(
            "one image has a coordinate reference system and the other has none",
            "give both images a CRS, or register without georeferencing",
        )
    from sarreg.errors import crs_mismatch_error

    try:
        xs, ys = warp_transform(src_crs, dst_crs, pts[:, 0].tolist(), pts[:, 1].tolist())
    except Exception as err:  # rasterio/PROJ errors (CPLE_AppDefinedError, ...)
        raise crs_mismatch_error(pts, src_crs, dst_crs, err) from err
    out = np.stack([np.asarray(xs, float), np.asarray(ys, float)], axis=1)
    if not np.isfinite(out).all():
        raise crs_mismatch_error(pts, src_crs, dst_crs, None)
    return out


def pixel_outline(shape: tuple[int, int], densify: int = 2) -> np.ndarray:
    """Outer outline ``(4 * (densify - 1), 2)`` of an ``(H, W)`` grid, clockwise, in pixel-centre
    coordinates: the outer pixel corners, from ``(-0.5, -0.5)`` to ``(W - 0.5, H - 0.5)``.

    ``densify`` points per edge including both ends (2 = the four corners only).
    """
    h, w = shape
    t = np.linspace(0.0, 1.0, max(2, densify))[:-1]
    edges = [
        np.stack([t * w, np.zeros_like(t)], 1),
        np.stack([np.full_like(t, w), t * h], 1),
        np.stack([w - t * w, np.full_like(t, h)], 1),
        np.stack([np.zeros_like(t), h - t * h], 1),
    ]
    return np.concatenate(edges) - 0.5


def footprint(transform: Affine, shape: tuple[int, int]) -> Polygon:
    """Outline of an ``(H, W)`` grid (its outer pixel corners) in map coordinates."""
    return Polygon(pixel_to_map(transform, pixel_outline(shape)))


def footprint_in_crs(
    transform: Affine,
    crs,
    shape: tuple[int, int],
    dst_crs,
    densify: int = 21,
    matrix: np.ndarray | None = None,
) -> Polygon:
    """Outline of an ``(H, W)`` grid in ``dst_crs``, edges densified to ``densify`` points.

    ``matrix``: a 3x3 pixel transform applied to the outline first, e.g. a registration's
    moving -> reference matrix, with ``transform`` and ``crs`` the reference's: the outline of
    the registered moving image.
    """
    ring = pixel_outline(shape, densify)
    if matrix is not None:
        ring = apply_matrix(matrix, ring)
    return Polygon(reproject_xy(pixel_to_map(transform, ring), crs, dst_crs))


def overlap_fraction(
    ref_transform: Affine,
    ref_crs,
    ref_shape: tuple[int, int],
    mov_transform: Affine,
    mov_crs,
    mov_shape: tuple[int, int],
) -> float:
    """Intersection area / area of the smaller footprint (0..1), in the reference CRS."""
    ref = footprint(ref_transform, ref_shape)
    mov = footprint_in_crs(mov_transform, mov_crs, mov_shape, ref_crs)
    if not ref.is_valid or not mov.is_valid:
        ref, mov = ref.buffer(0), mov.buffer(0)
    smaller = min(ref.area, mov.area)
    if smaller <= 0:
        return 0.0
    return float(ref.intersection(mov).area / smaller)


def check_overlap(
    ref_transform: Affine,
    ref_crs,
    ref_shape: tuple[int, int],
    mov_transform: Affine,
    mov_crs,
    mov_shape: tuple[int, int],
    ref_name: str = "the reference",
    mov_name: str = "the moving image",
) -> float:
    """:func:`overlap_fraction`, raising NoOverlapError when the footprints do not intersect."""
    try:
        frac = overlap_fraction(
            ref_transform, ref_crs, ref_shape, mov_transform, mov_crs, mov_shape
        )
    except NotGeoreferencedError as err:
        raise NotGeoreferencedError(f"{ref_name} or {mov_name}: {err.message}", err.hint) from err
    if frac <= 0.0:
        ref = footprint(ref_transform, ref_shape).bounds
        mov = footprint_in_crs(mov_transform, mov_crs, mov_shape, ref_crs).bounds
        raise NoOverlapError(
            f"the footprints of {ref_name} and {mov_name} do not overlap (bounds "
            f"{_fmt_bounds(ref)} vs {_fmt_bounds(mov)} in {ref_crs or 'pixel units'})",
            "check that both files cover the same area and carry the right CRS and geotransform",
        )
    return frac


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


def prior_from_georef(
    ref_transform: Affine, ref_crs, mov_transform: Affine, mov_crs
) -> Callable[[np.ndarray], np.ndarray]:
    """Mapping ``(N, 2)`` moving pixel centres -> predicted reference pixel centres.

    Goes moving pixel -> moving map -> (reprojection to the reference CRS if it differs) ->
    reference pixel.
    """
    _check_same_georef(ref_crs, mov_crs)

    def prior(xy_mov) -> np.ndarray:
        xy_map = reproject_xy(pixel_to_map(mov_transform, xy_mov), mov_crs, ref_crs)
        return map_to_pixel(ref_transform, xy_map)

    return prior


def _check_same_georef(ref_crs, mov_crs) -> None:
    if (ref_crs is None) != (mov_crs is None):
        raise NotGeoreferencedError(
            "only one of the two images has a coordinate reference system",
            "give both images a CRS, or register without georeferencing",
        )


def matrix_from_georef(
    ref_transform: Affine,
    ref_crs,
    mov_transform: Affine,
    mov_crs,
    mov_shape: tuple[int, int],
    model: str = "affine",
    grid: int = 11,
) -> np.ndarray:
    """Initial guess of ``M`` (3x3, moving px -> reference px) from georeferencing alone.

    Fits ``model`` by least squares to :func:`prior_from_georef` on a ``grid x grid`` lattice
    over the moving image of shape ``(H, W)``. Exact for equal CRSs with affine/homography.
    """
    _check_model(model)
    h, w = mov_shape
    gx, gy = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
    src = np.stack([gx.ravel(), gy.ravel()], 1)
    dst = prior_from_georef(ref_transform, ref_crs, mov_transform, mov_crs)(src)
    m = _refit(model, src, dst, None)
    if m is None:
        raise DegenerateTransformError(
            "the georeferencing of the two images gives a degenerate pixel mapping",
            "check both files' geotransforms",
        )
    log.debug("georef prior fit: max residual %.3g px", residuals(m, src, dst).max())
    return m


def corrected_geotransform(ref_transform: Affine, matrix: np.ndarray) -> Affine:
    """Geotransform of the moving image (pixel corners -> reference-CRS map) given ``M``.

    A moving pixel corner ``(c, r)`` is the point ``(c - 0.5, r - 0.5)`` in pixel-centre
    coordinates; ``M`` takes it to reference pixel centres, ``+ 0.5`` to reference pixel
    corners, and ``ref_transform`` to map coordinates.

    Raises:
        ValueError: ``matrix`` is a homography (use GCPs instead).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if not np.allclose(m[2], [0.0, 0.0, m[2, 2]], atol=1e-12) or abs(m[2, 2]) < 1e-12:
        raise ValueError("corrected_geotransform needs an affine matrix (last row 0, 0, 1)")
    m = m / m[2, 2]
    shift = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    unshift = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    t = ref_transform
    tm = np.array([[t.a, t.b, t.c], [t.d, t.e, t.f], [0, 0, 1.0]])
    g = tm @ shift @ m @ unshift
    return Affine(g[0, 0], g[0, 1], g[0, 2], g[1, 0], g[1, 1], g[1, 2])
