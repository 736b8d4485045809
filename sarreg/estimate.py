"""Tie points and their robust fit, shared by the coarse pass and the tiles: guided matching,
the checked fit of a transform model, residual summaries per tile / region.

Coordinates: tie points are full-resolution pixel centres of each file, ``(N, 2)`` float64,
top-left pixel centre at ``(0, 0)``; fits map moving to reference pixel centres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from sarreg.config import EstimateConfig, MatchConfig, TransformModel, transform_model
from sarreg.errors import TooFewMatchesError

if TYPE_CHECKING:
    from sarreg.features import Features
    from sarreg.matching import Matches

log = logging.getLogger(__name__)


@dataclass
class TiePoints:
    """Tie points in full-resolution pixel centres, ``(N, 2)`` float64 each, with per-point
    match similarity, keypoint scores and the tile they came from (-1: the coarse pass)."""

    xy_ref: np.ndarray
    xy_mov: np.ndarray
    similarity: np.ndarray
    score_ref: np.ndarray
    score_mov: np.ndarray
    tile: np.ndarray

    def __len__(self) -> int:
        return int(self.xy_ref.shape[0])

    @classmethod
    def from_matches(
        cls, ref, mov, feat_ref: Features, feat_mov: Features, matches: Matches, tile: int = -1
    ) -> TiePoints:
        """Tie points of ``matches`` between features of the work-resolution rasters ``ref``
        and ``mov`` (``sarreg.io.Raster``), converted to full-resolution pixel centres."""
        return cls(
            ref.to_full_res(feat_ref.keypoints[matches.idx_ref].astype(np.float64)),
            mov.to_full_res(feat_mov.keypoints[matches.idx_mov].astype(np.float64)),
            np.asarray(matches.similarity, dtype=np.float64),
            feat_ref.scores[matches.idx_ref].astype(np.float64),
            feat_mov.scores[matches.idx_mov].astype(np.float64),
            np.full(len(matches), tile, dtype=np.int64),
        )

    def subset(self, idx) -> TiePoints:
        """The tie points selected by an index array or boolean mask."""
        return TiePoints(*(getattr(self, f.name)[idx] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[TiePoints]) -> TiePoints:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def prior_at_work_resolution(prior_full, ref, mov):
    """Compose array->full-res (moving), a full-resolution prior, and full-res->array (ref)."""

    def prior(xy_mov_work: np.ndarray) -> np.ndarray:
        return ref.from_full_res(prior_full(mov.to_full_res(xy_mov_work)))

    return prior


def work_to_full(raster) -> np.ndarray:
    """3x3 matrix taking work-resolution pixel centres to full-resolution pixel centres."""
    d = float(raster.decimation)
    ox, oy = raster.window_offset
    return np.array([[d, 0.0, 0.5 * d - 0.5 + ox], [0.0, d, 0.5 * d - 0.5 + oy], [0.0, 0.0, 1.0]])


def match_guided(
    feat_ref: Features,
    feat_mov: Features,
    config: MatchConfig,
    prior,
    model: TransformModel,
    radius: float,
    fallback: bool = True,
) -> Matches:
    """Mutual nearest neighbours, with the prior (within ``radius`` reference work pixels of
    its prediction) when given.

    When the prior gives too few matches (georeferencing off by more than the search radius),
    fall back to unconstrained matching (unless ``fallback`` is False: then too few matches
    raise :class:`TooFewMatchesError`).
    """
    from sarreg.matching import match_mutual

    need = model.min_points
    if prior is not None:
        matches = match_mutual(feat_ref, feat_mov, replace(config, radius=radius), prior=prior)
        if len(matches) >= max(need, 20):
            return matches
        if not fallback:
            raise TooFewMatchesError(
                f"only {len(matches)} matches within {radius:.3g} px of the predicted positions",
                "increase the search radius",
            )
        log.info(
            "only %d matches within the search radius; matching without the prior", len(matches)
        )
    matches = match_mutual(feat_ref, feat_mov, replace(config, radius=None))
    if len(matches) < need:
        raise TooFewMatchesError(
            f"only {len(matches)} matches between the images (need >= {need} for a "
            f"{model.name} transform)",
            "check that the images overlap and show the same area; try --transform similarity "
            "or a lower --min-similarity",
        )
    return matches


def fit_checked(
    tie: TiePoints,
    config: EstimateConfig,
    model: TransformModel | str,
    threshold: float,
    mov_shape,
    what: str | None = None,
    initial_inliers=None,
    allow_reflection: bool | None = None,
    check: bool = True,
):
    """Fit ``model`` robustly on the tie points and check it: the number of inliers
    (``config.min_inliers``, at least the model's minimum) and plausibility (scale range,
    fold-over over ``mov_shape``; unless not ``check``: see :func:`check_fit`). ``what``:
    prefix of error messages."""
    if isinstance(model, str):
        model = transform_model(model)
    fit = model.fit(tie.xy_mov, tie.xy_ref, threshold, config.seed, initial_inliers)
    need = config.min_inliers if not model.linear else max(config.min_inliers, model.min_points)
    if fit.n_inliers < need:
        raise TooFewMatchesError(
            f"only {fit.n_inliers} of {len(tie)} {what or ''}matches agree on a {model.name} "
            f"transform (need >= {need})",
            "check that the images show the same area; try --transform similarity, "
            "--no-prior, or a larger --search-radius",
        )
    if check:
        check_fit(fit, config, model, mov_shape, allow_reflection)
    return fit


def check_fit(
    fit, config: EstimateConfig, model: TransformModel, mov_shape, allow_reflection=None
) -> None:
    """:func:`sarreg.geometry.check_plausible` of a fit (DegenerateTransformError, exit 8);
    ``allow_reflection`` None: ``config.allow_reflection``."""
    from sarreg import geometry

    geometry.check_plausible(
        fit.matrix,
        model.plausibility_model,
        scale_range=config.scale_range,
        shape=mov_shape,
        allow_reflection=config.allow_reflection if allow_reflection is None else allow_reflection,
    )


def residual_summary(res: np.ndarray, inl: np.ndarray) -> dict:
    """Residual figures of a group of tie points (reference pixels)."""
    out = {"tie_points": int(len(res)), "inliers": int(inl.sum())}
    if inl.any():
        r = res[inl]
        out.update(
            rmse_px=float(np.sqrt(np.mean(r**2))),
            median_px=float(np.median(r)),
            max_px=float(r.max()),
        )
    return out


def region_stats(shape, n: int, xy_ref: np.ndarray, fit) -> list[dict]:
    """Residuals of the fit per region of an ``n x n`` grid over the reference image."""
    from sarreg import scene

    res = np.asarray(fit.residuals)
    inl = np.asarray(fit.inliers, dtype=bool)
    out = []
    for k, win in enumerate(scene.region_grid(shape, n)):
        x, y = xy_ref[:, 0], xy_ref[:, 1]
        sel = (
            (x >= win.col_off - 0.5)
            & (x < win.col_off + win.width - 0.5)
            & (y >= win.row_off - 0.5)
            & (y < win.row_off + win.height - 0.5)
        )
        out.append(
            {
                "index": k,
                "ref_window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
                "status": "region",
                "residuals": residual_summary(res[sel], inl[sel]),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# tie-point refinement by local correlation


#: side of the windows correlated around each tie point (work pixels)
REFINE_WINDOW = 32
#: a correlation shift larger than this (work pixels) is not a refinement: the point is kept
REFINE_MAX_SHIFT = 2.0
#: windows whose normalized cross-correlation (at the predicted position) is below this keep
#: their point as it was
REFINE_MIN_RESPONSE = 0.2
#: upsampling of the phase correlation (1/20 px)
REFINE_UPSAMPLE = 20
#: at most this many inliers are refined (evenly spread over the inlier list); the others keep
#: their position and a low weight in the weighted fit
REFINE_MAX_POINTS = 400


@dataclass
class Refinement:
    """Tie points moved onto the reference's local correlation peak.

    Attributes:
        xy_ref: ``(N, 2)`` float64 refined reference positions, full-resolution pixel centres
            (the moving positions stay as they were).
        response: ``(N,)`` normalized cross-correlation of the two windows (0: not refined).
        refined: ``(N,)`` bool, the point was moved.
    """

    xy_ref: np.ndarray
    response: np.ndarray
    refined: np.ndarray

    def to_dict(self) -> dict:
        return {
            "tie_points": int(len(self.refined)),
            "refined": int(self.refined.sum()),
            "median_response": round(float(np.median(self.response)), 4)
            if len(self.response)
            else None,
        }


def refine_by_correlation(
    img_ref: np.ndarray,
    valid_ref: np.ndarray,
    img_mov: np.ndarray,
    valid_mov: np.ndarray,
    matrix_work: np.ndarray,
    xy_mov_work: np.ndarray,
    window: int = REFINE_WINDOW,
    max_shift: float = REFINE_MAX_SHIFT,
    min_response: float = REFINE_MIN_RESPONSE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel reference positions of moving points by local phase correlation.

    The moving image is warped onto the reference grid by ``matrix_work`` (moving -> reference
    work pixel centres, OpenCV ``warpPerspective``); around the predicted position ``p`` of
    each moving point a ``window`` x ``window`` window of the reference and of the warped
    moving image are compared by ``skimage.registration.phase_cross_correlation`` (upsampled
    :data:`REFINE_UPSAMPLE` times): the warped moving content at ``p`` lies at ``p + s`` in
    the reference, ``s = (dx, dy)`` the shift that registers the moving window. Each point's
    quality is the windows' normalized cross-correlation.

    Args:
        img_ref, img_mov: ``(H, W)`` float32 normalized images (work resolution).
        valid_ref, valid_mov: ``(H, W)`` bool valid pixels of each.
        matrix_work: ``(3, 3)`` moving -> reference, work pixel centres.
        xy_mov_work: ``(N, 2)`` moving points, work pixel centres.
        window: correlation window side (even), pixels.
        max_shift: larger shifts are rejected (the point keeps its prediction).
        min_response: windows that correlate less are not refined.

    Returns:
        ``xy_ref (N, 2)`` reference work pixel centres (the prediction where not refined),
        ``response (N,)`` (0 where not refined), ``refined (N,)`` bool.
    """
    import cv2
    from skimage.registration import phase_cross_correlation

    from sarreg.geometry import apply_matrix

    h, w = img_ref.shape
    m = np.asarray(matrix_work, np.float64)
    warped = cv2.warpPerspective(
        np.asarray(img_mov, np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )  # fmt: skip
    wvalid = cv2.warpPerspective(
        np.asarray(valid_mov, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    ) > 0  # fmt: skip
    both = wvalid & np.asarray(valid_ref, bool)
    ref32 = np.asarray(img_ref, np.float32)
    pred = apply_matrix(m, np.asarray(xy_mov_work, np.float64))
    out = pred.copy()
    resp = np.zeros(len(pred))
    refined = np.zeros(len(pred), bool)
    half = window // 2
    for i, (x, y) in enumerate(pred):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        x0, y0 = int(round(x)) - half, int(round(y)) - half
        if x0 < 0 or y0 < 0 or x0 + window > w or y0 + window > h:
            continue
        win = (slice(y0, y0 + window), slice(x0, x0 + window))
        if not both[win].all():
            continue
        a = ref32[win] - ref32[win].mean()
        b = warped[win] - warped[win].mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        r = float((a * b).sum()) / den if den > 1e-12 else 0.0
        if r < min_response:
            continue
        (sy, sx), _, _ = phase_cross_correlation(
            a, b, upsample_factor=REFINE_UPSAMPLE, normalization=None
        )
        if not np.hypot(sx, sy) <= max_shift:
            continue
        out[i] = (x + sx, y + sy)
        resp[i] = r
        refined[i] = True
    return out, resp, refined


def refine_tie_points(
    coarse, tie: TiePoints, fit, max_points: int = REFINE_MAX_POINTS
) -> Refinement:
    """:func:`refine_by_correlation` of the inlier tie points of ``fit`` (at most
    ``max_points``, evenly spread over them) of a coarse pass (``coarse``:
    :class:`sarreg.coarse.CoarseEstimate`, its rasters and normalized images) under ``fit``
    (full-resolution matrix), back in full-resolution reference pixel centres."""
    from sarreg.verify import work_matrix

    n = len(tie)
    idx = np.flatnonzero(np.asarray(fit.inliers, dtype=bool))
    if len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).round().astype(np.int64)]
    m = work_matrix(coarse.ref, coarse.mov, np.asarray(fit.matrix, np.float64))
    xy_mov_work = coarse.mov.from_full_res(tie.xy_mov[idx])
    xy, resp, ok = refine_by_correlation(
        coarse.img_ref, coarse.ref.mask, coarse.img_mov, coarse.mov.mask, m, xy_mov_work
    )
    xy_full = tie.xy_ref.copy()
    xy_full[idx[ok]] = coarse.ref.to_full_res(xy[ok])
    response = np.zeros(n)
    response[idx] = resp
    refined = np.zeros(n, bool)
    refined[idx[ok]] = True
    return Refinement(xy_full, response, refined)


def refit_refined(ctx, coarse, model: TransformModel):
    """The coarse pass's final fit redone on its refined tie points (``config.refine_tie_points``)
    and/or weighted by tie-point quality (``config.weighted_fit``: correlation of each refined
    point, half the median of those for the points not refined; match similarity without
    refinement), in the search hypothesis' frame as the coarse fit was. Linear models only
    (the weights do not enter a homography's least squares).

    Returns ``(tie points, fit, refinement dict or None)``; the coarse pass's own when
    neither setting is on, or when the refit fails its checks or loses inliers (logged)."""
    from sarreg import geometry
    from sarreg.errors import DegenerateTransformError

    config = ctx.config.estimate
    tie, fit = coarse.tie, coarse.fit
    if not (config.refine_tie_points or config.weighted_fit) or not model.linear:
        return tie, fit, None
    info = None
    new = tie
    weights = np.clip(tie.similarity, 0.0, None)
    if config.refine_tie_points:
        rf = refine_tie_points(coarse, tie, fit)
        new = replace(tie, xy_ref=rf.xy_ref)
        info = rf.to_dict()
        rest = 0.5 * float(np.median(rf.response[rf.refined])) if rf.refined.any() else 1.0
        weights = np.where(rf.refined, rf.response, rest)
    hyp = coarse.search.best.hypothesis if coarse.search is not None else None
    g = hyp.linear() if hyp is not None and not hyp.is_identity else np.eye(3)
    shrink = hyp.ref_shrink if hyp is not None else 1.0
    threshold = config.ransac_threshold * float(coarse.ref.decimation) * shrink
    xy_mov_g = geometry.apply_matrix(g, new.xy_mov)
    try:
        refit = geometry.fit_transform(
            xy_mov_g, new.xy_ref, model.name, threshold, seed=config.seed,
            weights=np.maximum(weights, 1e-3) if config.weighted_fit else None,
        )  # fmt: skip
        refit = replace(refit, matrix=refit.matrix @ g)
        flip = bool(hyp is not None and hyp.flip)
        check_fit(refit, config, model, ctx.mov_info.shape, config.allow_reflection or flip)
    except (TooFewMatchesError, DegenerateTransformError, ValueError) as err:
        log.info("refit on refined tie points failed (%s); keeping the coarse fit", err)
        return tie, fit, None
    if refit.n_inliers < 0.8 * fit.n_inliers:
        log.info(
            "refit kept %d of %d inliers; keeping the coarse fit", refit.n_inliers, fit.n_inliers
        )
        return tie, fit, None
    return new, refit, info
