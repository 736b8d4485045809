"""Stage 3 of a registration: the coarse pass. Both images read whole, decimated to at most
``RegisterConfig.coarse_read_size`` pixels (smaller images as they are, at about the same pixel
size when the georeferencing tells the scale), normalized, extracted, matched (guided by the
georeferencing when both have it) and fitted.

For images no larger than the coarse read this is the whole registration; for larger ones its
transform is the prior of the full-resolution tiles (:mod:`sarreg.tiles`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from sarreg.config import TransformModel
from sarreg.errors import EmptyImageError
from sarreg.estimate import (
    TiePoints,
    fit_checked,
    match_guided,
    prior_at_work_resolution,
)
from sarreg.inputs import RunContext, tile_decimations, work_sizes

log = logging.getLogger(__name__)


@dataclass
class CoarseEstimate:
    """The coarse pass: its work-resolution rasters (``sarreg.io.Raster``), normalized images,
    features, matches, the fit and its tie points (full-resolution pixel centres)."""

    ref: object
    mov: object
    img_ref: np.ndarray
    img_mov: np.ndarray
    feat_ref: object  # sarreg.features.Features
    feat_mov: object
    matches: object  # sarreg.matching.Matches
    tie: TiePoints
    fit: object  # sarreg.geometry.TransformFit

    @property
    def work_inliers(self) -> np.ndarray:
        """``(len(matches),)`` bool: inliers of the coarse fit."""
        return np.asarray(self.fit.inliers, dtype=bool)

    def to_dict(self, tiles_planned: int, tiles_used: int) -> dict:
        """The report's ``coarse`` entry."""
        return {
            "decimation_ref": float(self.ref.decimation),
            "decimation_mov": float(self.mov.decimation),
            "model": self.fit.model,
            "matches": int(len(self.matches)),
            "inliers": int(self.fit.n_inliers),
            "rmse_px": float(self.fit.rmse),
            "pixel_matrix": np.asarray(self.fit.matrix).tolist(),
            "tiles_planned": int(tiles_planned),
            "tiles_used": int(tiles_used),
        }


def read_coarse(ctx: RunContext):
    """Both images read whole at coarse resolution -> (ref Raster, mov Raster)."""
    from sarreg import io

    config = ctx.config
    size_ref, size_mov = work_sizes(
        ctx.ref_info, ctx.mov_info, config.coarse_read_size, ctx.inputs.prior_scale
    )
    ref = io.read_raster(
        ctx.ref_path, band=config.band_ref, kind=config.kind_ref, max_size=size_ref
    )
    mov = io.read_raster(
        ctx.mov_path, band=config.band_mov, kind=config.kind_mov, max_size=size_mov
    )
    return ref, mov


def needs_tiles(ref, mov, prior_scale: float | None) -> bool:
    """Whether full-resolution tiles can add detail to the coarse pass: an image was read
    decimated beyond the pixel size its tiles would be read at (the finer image of a pair of
    different resolutions is read at the coarser one's pixel size in the tiles too)."""
    dec_ref, dec_mov = tile_decimations(prior_scale) if prior_scale else (1.0, 1.0)
    return ref.decimation > 1.02 * dec_ref or mov.decimation > 1.02 * dec_mov


def estimate_coarse(
    ctx: RunContext, ref, mov, model: TransformModel, final: bool
) -> CoarseEstimate:
    """Normalize, extract, match and fit ``model`` on the coarse reads ``ref``, ``mov``.
    ``final``: this fit is the registration (else the prior of the tiles)."""
    from sarreg import preprocess
    from sarreg.features import extract
    from sarreg.matching import refine_keypoints

    config, timer = ctx.config, ctx.timer
    with timer.stage("preprocess"):
        img_ref, kp_mask_ref = preprocess.preprocess(
            ref.data, ref.mask, ref.kind, ctx.pre_cfg, name=f"the reference image {ctx.ref_path}"
        )
        img_mov, kp_mask_mov = preprocess.preprocess(
            mov.data, mov.mask, mov.kind, ctx.pre_cfg, name=f"the moving image {ctx.mov_path}"
        )

    with timer.stage("extract"):
        xcfg = config.extract
        if ctx.pyramid.coarse is not None:
            xcfg = replace(xcfg, scales=tuple(ctx.pyramid.coarse))
        # only the moving keypoints are refined: the reference keeps no local descriptors
        feat_ref = extract(ctx.loaded.net, img_ref, kp_mask_ref, replace(xcfg, refine_radius=0))
        feat_mov = extract(ctx.loaded.net, img_mov, kp_mask_mov, xcfg)
    for name, path, feat, raster, kpm in (
        ("reference", ctx.ref_path, feat_ref, ref, kp_mask_ref),
        ("moving", ctx.mov_path, feat_mov, mov, kp_mask_mov),
    ):
        if len(feat) < 8:
            found = preprocess.describe_image(raster.data, raster.mask, kpm)
            raise EmptyImageError(
                f"the {name} image {path} gave only {len(feat)} keypoints (featureless: {found})",
                "check --band and that the image holds radar backscatter with structure",
            )

    # prior at work resolution: moving work px -> reference work px
    prior_work = None
    if ctx.georef and config.use_prior:
        prior_work = prior_at_work_resolution(ctx.inputs.prior_full, ref, mov)

    with timer.stage("match"):
        matches = match_guided(feat_ref, feat_mov, config, prior_work, model, config.search_radius)
        feat_mov = refine_keypoints(feat_ref, feat_mov, matches)

    with timer.stage("estimate"):
        tie = TiePoints.from_matches(ref, mov, feat_ref, feat_mov, matches)
        fit = fit_checked(
            tie,
            config,
            model,
            config.ransac_threshold * ref.decimation,
            ctx.mov_info.shape,
            None if final else "coarse ",
        )
    return CoarseEstimate(ref, mov, img_ref, img_mov, feat_ref, feat_mov, matches, tie, fit)
