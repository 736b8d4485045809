"""Stage 3 of a registration: the coarse pass. Both images read whole, decimated to at most
``config.input.coarse_read_size`` pixels (smaller images as they are, at about the same pixel
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
    check_fit,
    fit_checked,
    match_guided,
    prior_at_work_resolution,
)
from sarreg.inputs import RunContext, tile_decimations, work_sizes

log = logging.getLogger(__name__)

#: pyramid of the moving image while hypotheses of the search are screened (the winner is
#: redone with ``config.extract``'s)
SCREEN_SCALES = (1.0,)


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
    verification: object | None = None  # sarreg.verify.Verification of ``fit``
    search: object | None = None  # sarreg.search.SearchResult
    scales: tuple[float, ...] | None = None  # pyramid levels run (None: the extractor's own)

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
            "keypoints": [int(len(self.feat_ref)), int(len(self.feat_mov))],
            "scales": None if self.scales is None else [float(v) for v in self.scales],
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
        ctx.ref_info, ctx.mov_info, config.input.coarse_read_size, ctx.inputs.prior_scale
    )
    ref = io.read_raster(
        ctx.ref_path, band=config.input.band_ref, kind=config.input.kind_ref, max_size=size_ref
    )
    mov = io.read_raster(
        ctx.mov_path, band=config.input.band_mov, kind=config.input.kind_mov, max_size=size_mov
    )
    return ref, mov


def needs_tiles(ref, mov, prior_scale: float | None) -> bool:
    """Whether full-resolution tiles can add detail to the coarse pass: an image was read
    decimated beyond the pixel size its tiles would be read at (the finer image of a pair of
    different resolutions is read at the coarser one's pixel size in the tiles too)."""
    dec_ref, dec_mov = tile_decimations(prior_scale) if prior_scale else (1.0, 1.0)
    return ref.decimation > 1.02 * dec_ref or mov.decimation > 1.02 * dec_mov


def estimate_coarse(
    ctx: RunContext,
    ref,
    mov,
    model: TransformModel,
    final: bool,
    seed: bool = False,
) -> CoarseEstimate:
    """Normalize, extract, match and fit ``model`` on the coarse reads ``ref``, ``mov``.
    ``final``: this fit is the registration (else the prior of the tiles). ``seed``: the
    pass only seeds tiles: the pyramid plan's scales for that
    (:meth:`sarreg.config.PyramidPlan.coarse_scales`) and at most ``tiling.coarse_top_k``
    keypoints per image."""
    from sarreg import preprocess
    from sarreg.features import extract

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
        scales = ctx.pyramid.coarse_scales(seed)
        if scales is not None:
            xcfg = replace(xcfg, scales=tuple(scales))
        if seed and config.tiling.coarse_top_k is not None:
            xcfg = replace(xcfg, top_k=min(xcfg.top_k, int(config.tiling.coarse_top_k)))
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
    if ctx.georef and config.estimate.use_prior:
        prior_work = prior_at_work_resolution(ctx.inputs.prior_full, ref, mov)

    found = fit_searched(
        ctx, model, ref, mov, (img_ref, kp_mask_ref), (img_mov, kp_mask_mov), feat_ref, feat_mov,
        prior_work, xcfg, final,
    )  # fmt: skip
    matches, feat_mov, tie, fit, feat_ref = found.best.payload
    return CoarseEstimate(
        ref, mov, img_ref, img_mov, feat_ref, feat_mov, matches, tie, fit,
        verification=found.best.verification, search=found, scales=scales,
    )  # fmt: skip


def fit_searched(
    ctx: RunContext, model: TransformModel, ref, mov, ref_img, mov_img, feat_ref, feat_mov,
    prior_work, xcfg, final: bool,
):  # fmt: skip
    """Match, fit and verify the moving features as they are (with the georeferencing prior
    when given); when that is weak (:func:`sarreg.search.is_weak`) retry without the prior and
    over the hypotheses of :mod:`sarreg.search` (moving image rotated, flipped, scaled), the
    Fourier-Mellin proposals (:func:`sarreg.search.fourier_mellin`) first.

    ``ref_img``, ``mov_img``: ``(image, keypoint mask)`` of the coarse reads, ``(H, W)``.
    Returns the :class:`sarreg.search.SearchResult`; its ``best.payload`` is ``(matches,
    moving features in moving work px, tie points, fit, reference features)``. Raises the
    first attempt's error when no attempt gave a fit, and :class:`DegenerateTransformError`
    (exit 8) when a mirrored hypothesis wins without ``config.estimate.allow_reflection``."""
    from sarreg import geometry, search, verify
    from sarreg.errors import DegenerateTransformError, TooFewMatchesError
    from sarreg.features import extract, progress_bar
    from sarreg.matching import refine_keypoints

    config, timer = ctx.config, ctx.timer
    img_ref, kpm_ref = ref_img
    img_mov, kpm_mov = mov_img
    what = None if final else "coarse "
    ref_levels = {(1.0, 1.0): feat_ref}
    # hypotheses are screened on one level of the moving image; the winner is redone in full
    screen_cfg = replace(xcfg, progress=False, scales=SCREEN_SCALES)

    def reference_features(shrink: float, up: float):
        """Reference features of the reference shrunk by ``shrink`` (area average) and then
        enlarged by ``up`` (bilinear), keypoints in work px."""
        if (shrink, up) not in ref_levels:
            import cv2

            small, msk, s_mat = search.resize(img_ref, kpm_ref, 1.0 / shrink, cv2.INTER_AREA)
            small, msk, u_mat = search.resize(small, msk, up, cv2.INTER_LINEAR)
            with timer.stage("extract"):
                f = extract(
                    ctx.loaded.net, small, msk, replace(xcfg, progress=False, refine_radius=0)
                )
            back = np.linalg.inv(u_mat @ s_mat)
            kp = geometry.apply_matrix(back, f.keypoints.astype(np.float64))
            ref_levels[(shrink, up)] = replace(
                f, keypoints=kp.astype(np.float32), image_shape=tuple(img_ref.shape)
            )
        return ref_levels[(shrink, up)]

    def moving_features(hyp, up: float, full: bool):
        """``(features, H)`` of the moving image resampled by ``hyp`` (and ``up``), keypoints
        in resampled px, ``H`` moving work px -> resampled px. Without ``full`` (a screened
        hypothesis) on one pyramid level (:data:`SCREEN_SCALES`; the hypotheses' scales step
        by 2, the reference keeps its pyramid): half the extraction time."""
        img_h, msk_h, h_mat = hyp.apply(img_mov, kpm_mov, up)
        cfg = replace(xcfg, progress=False) if full else screen_cfg
        with timer.stage("extract"):
            return extract(ctx.loaded.net, img_h, msk_h, cfg), h_mat

    def try_one(hyp, use_prior: bool, feats=None, full: bool = True):
        att = search.Attempt(hyp, use_prior, screened=feats is None and not full)
        try:
            up = search.upsample_factor(hyp, img_ref.shape, img_mov.shape)
            f_ref = reference_features(hyp.ref_shrink, up)
            if feats is None:
                feats, h_mat = moving_features(hyp, up, full)
            else:
                h_mat = np.eye(3)
            h_inv = np.linalg.inv(h_mat)
            prior_h = None
            if use_prior and prior_work is not None:

                def prior_h(xy):  # resampled moving px -> reference px
                    return prior_work(geometry.apply_matrix(h_inv, xy))

            att.stage = "match"
            with timer.stage("match"):
                matches = match_guided(
                    f_ref, feats, config.match, prior_h, model, config.estimate.search_radius
                )
                feats = refine_keypoints(f_ref, feats, matches)
            att.stage = "fit"
            kp = geometry.apply_matrix(h_inv, feats.keypoints.astype(np.float64))
            feats = replace(
                feats, keypoints=kp.astype(np.float32), image_shape=tuple(img_mov.shape)
            )
            with timer.stage("estimate"):
                tie = TiePoints.from_matches(ref, mov, f_ref, feats, matches)
                # fit in the hypothesis' frame (G x_mov), then compose: M = M_fit @ G
                g = hyp.linear() if not hyp.is_identity and model.linear else np.eye(3)
                tie_g = replace(tie, xy_mov=geometry.apply_matrix(g, tie.xy_mov))
                threshold = config.estimate.ransac_threshold * ref.decimation * hyp.ref_shrink
                fit = fit_checked(
                    tie_g, config.estimate, model, threshold, ctx.mov_info.shape, what, check=False
                )
                fit = replace(fit, matrix=fit.matrix @ g)
            att.n_inliers, att.inlier_share = int(fit.n_inliers), fit.n_inliers / len(tie)
            with timer.stage("verify"):
                att.verification = verify.verify_fit(
                    ref, mov, img_ref, img_mov, fit.matrix, mapping=fit.mapping
                )
            try:
                check_fit(
                    fit,
                    config.estimate,
                    model,
                    ctx.mov_info.shape,
                    config.estimate.allow_reflection or hyp.flip,
                )
            except DegenerateTransformError:
                # a verified but implausible fit (e.g. outside the scale range) ends the search
                att.final = att.passed
                raise
            att.payload = (matches, feats, tie, fit, f_ref)
        except (TooFewMatchesError, DegenerateTransformError) as err:
            # without its traceback: its frames would hold this attempt's images and features
            # (with local descriptors) for as long as the search keeps the attempt
            att.error = err.with_traceback(None)
        return att

    def corrects(att) -> bool:
        """Whether the window correction of the final check makes ``att``'s fit pass."""
        tie, fit = att.payload[2], att.payload[3]
        with timer.stage("verify"):
            ver = verify.correct_by_windows(
                ref, mov, img_ref, img_mov, fit, tie, att.verification, ctx.mov_info.shape
            )[1]
        return ver.verdict is verify.Verdict.PASS

    used_prior = prior_work is not None
    first = try_one(search.Hypothesis(), used_prior, feat_mov)
    if not config.estimate.search or not search.is_weak(first):
        found = search.SearchResult(first, [first])
    else:
        with timer.stage("search"):
            proposals = search.fourier_mellin(img_ref, kpm_ref, img_mov, kpm_mov)
        said = "; ".join(f"{p.hypothesis.describe()} ({p.response:.2f})" for p in proposals)
        log.info("Fourier-Mellin proposals: %s", said)
        todo = [(search.Hypothesis(), False)] if used_prior else []
        # also when the images give too few matches as they are: a large scale does that
        log.info("the plain fit is weak or fails its check; searching orientation and scale")
        todo += [
            (h, False)
            for h in search.hypotheses(
                flips=True,
                size_ratio=search.size_ratio(img_ref.shape, img_mov.shape),
                flips_first=config.estimate.allow_reflection,
                proposals=[p.hypothesis for p in proposals],
            )
        ]
        # a refusal tries every hypothesis (a minute or more): show how far it got
        with progress_bar(len(todo), "search", "hypothesis", config.progress) as bar:

            def screened(h, p):
                try:
                    return try_one(h, p, feats=feat_mov if h.is_identity else None,
                                   full=h.is_identity)  # fmt: skip
                finally:
                    bar.update(1)

            found = search.run_search(todo, screened, first)
            found = search.redo_in_full(found, try_one, corrects)
    best = found.best
    final_errors = [a for a in found.tried if a.final]
    if final_errors:
        raise final_errors[0].error
    if best.payload is None:
        raise first.error if first.error is not None else best.error
    if best.hypothesis.flip and not config.estimate.allow_reflection and best.passed:
        raise DegenerateTransformError(
            "the moving image is mirrored relative to the reference",
            "pass --allow-reflection to register mirrored images (e.g. ascending against "
            "descending passes)",
        )
    if best.payload is not first.payload:
        log.info("search: %s won", best.hypothesis.describe())
    return found
