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
