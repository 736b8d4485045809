"""Stage 4 of a registration (images larger than the coarse read): full-resolution tiles over
the overlap, each matched with the coarse transform as prior, then one global fit on all tiles'
tie points.

Only one tile pair is held in memory at a time. The number and size of the tiles follow from
the overlap (:func:`sarreg.scene.tile_grid`): enough tie points spread over the whole overlap
for the transform model, never a dense pass over all its pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from sarreg.coarse import CoarseEstimate
from sarreg.config import TransformModel
from sarreg.errors import EmptyImageError, NoOverlapError, SarregError, TooFewMatchesError
from sarreg.estimate import TiePoints, fit_checked, match_guided, residual_summary
from sarreg.inputs import RunContext, prior_scale, tile_decimations

log = logging.getLogger(__name__)

#: reference tiles whose normalized ([0, 1]) values vary less than this (std) are skipped
TILE_MIN_CONTRAST = 0.01
#: tiles with fewer keypoints than this in either image are skipped (featureless)
TILE_MIN_KEYPOINTS = 8


def read_multiple(decimation: float) -> int:
    """The multiple (full-resolution px) of a moving window's offsets and sizes: whole bins of
    an integer ``decimation`` that stay even after it (``2 d``); 2 for a fractional one."""
    d = float(decimation)
    return 2 * int(d) if d.is_integer() else 2


def mostly_nodata(valid_ref: float, valid_mov: float, min_valid: float) -> bool:
    """Whether a tile is skipped as mostly nodata: less than ``min_valid`` of its reference
    window valid, or less than half of that of its moving window (which reaches a search
    margin beyond the tile's footprint, past the image edge near the borders)."""
    return valid_ref < min_valid or valid_mov < min_valid / 2


def featureless(img_ref: np.ndarray, kpm_ref: np.ndarray, kpm_mov: np.ndarray) -> bool:
    """Whether a preprocessed tile pair (``(h, w)`` images in ``[0, 1]`` and keypoint masks) is
    skipped as featureless: no pixel may hold a keypoint in one of them, or the reference's
    keypoint pixels vary less than :data:`TILE_MIN_CONTRAST` (std; e.g. calm water in an
    8-bit display image, which is not stretched)."""
    if not kpm_ref.any() or not kpm_mov.any():
        return True
    return float(img_ref[kpm_ref].std()) < TILE_MIN_CONTRAST


class TileStatus(str, Enum):
    """What became of a tile (``region``: a residual region of a registration without tiles)."""

    used = "used"
    skipped = "skipped"
    region = "region"


@dataclass
class TileRecord:
    """One tile: its windows (``[col_off, row_off, width, height]``, full-resolution pixels),
    status, why it was skipped, the decimation of its two reads (``[reference, moving]``,
    full-resolution pixels per pixel read), its RANSAC threshold (full-resolution reference
    px: ``--ransac-threshold`` tile pixels) and its figures. ``to_dict()`` is its report
    entry."""

    index: int
    ref_window: list[int]
    status: TileStatus = TileStatus.skipped
    reason: str | None = None
    mov_window: list[int] | None = None
    valid_fraction: list[float] | None = None
    decimation: list[float] | None = None
    threshold_px: float | None = None
    keypoints: list[int] | None = None
    matches: int | None = None
    tile_inliers: int | None = None
    tile_rmse_px: float | None = None
    tie_points: int | None = None
    residuals: dict | None = None

    def skip(self, reason: str) -> TileRecord:
        self.status, self.reason = TileStatus.skipped, reason
        return self

    def to_dict(self) -> dict:
        out: dict = {
            "index": self.index,
            "ref_window": self.ref_window,
            "status": self.status.value,
        }
        for name in (
            "reason",
            "mov_window",
            "valid_fraction",
            "decimation",
            "threshold_px",
            "keypoints",
            "matches",
            "tile_inliers",
            "tile_rmse_px",
            "tie_points",
            "residuals",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class TiledEstimate:
    """The tiles' result: records, tie points of the used tiles, the global fit."""

    records: list[TileRecord]
    tie: TiePoints
    fit: object  # sarreg.geometry.TransformFit
    planned: int
    grid: dict = field(default_factory=dict)

    @property
    def used(self) -> list[TileRecord]:
        return [t for t in self.records if t.status is TileStatus.used]


def refine_with_tiles(
    ctx: RunContext, coarse: CoarseEstimate, model: TransformModel
) -> TiledEstimate:
    """Tiles over the overlap that the coarse transform gives, matched at full resolution with
    it as prior; the global ``model`` fit on all tiles' inliers. Raises NoOverlapError,
    EmptyImageError (every tile mostly nodata) or TooFewMatchesError (no tile gave points)."""
    from sarreg import geometry, scene

    config, timer = ctx.config, ctx.timer
    m0 = coarse.fit.matrix
    with timer.stage("tiles"):
        ref_t = ctx.ref_info.transform if ctx.georef else None
        overlap = scene.overlap_in_reference_pixels(
            ctx.ref_info.shape, ctx.mov_info.shape, m0, ref_t
        )
        if overlap.is_empty:
            raise NoOverlapError(
                f"after the coarse registration {ctx.mov_path} does not overlap {ctx.ref_path}",
                "check that both images show the same area",
            )
        scale = prior_scale(lambda xy: geometry.apply_matrix(m0, xy), ctx.mov_info.shape)
        # reference finer: read it at the moving pixel size (and vice versa)
        dec_ref, dec_mov = tile_decimations(scale)
        n, size_work = scene.tile_grid(
            overlap.area / dec_ref**2, model.linear, config.tiling.tiles, config.tiling.size
        )
        # size_work pixels at tile resolution; tile_grid's sizes are even, so at an integer
        # decimation the tile is whole bins of the decimated read (and even after it)
        size = int(round(size_work * dec_ref))
        windows = scene.plan_tiles(overlap, ctx.ref_info.shape, n, size)
    parts: list[TiePoints] = []
    records: list[TileRecord] = []
    for k, win in enumerate(windows):
        rec, part = register_tile(ctx, k, win, m0, coarse, dec_ref, dec_mov, model.local)
        records.append(rec)
        if part is not None:
            parts.append(part)
    log.info(
        "%d of %d tiles (%d x %d, %d px) gave tie points",
        sum(r.status is TileStatus.used for r in records),
        len(records),
        n,
        n,
        size,
    )
    # the global fit's threshold: --ransac-threshold in pixels of the tiles' reference reads
    threshold = config.estimate.ransac_threshold * dec_ref
    grid = {
        "per_side": n,
        "size_px": size,
        "decimation_ref": dec_ref,
        "decimation_mov": dec_mov,
        "threshold_px": threshold,
        "chosen": "auto" if config.tiling.tiles is None and config.tiling.size is None else "set",
    }
    if not parts:
        reasons = sorted({r.reason or "" for r in records})
        if records and all("nodata" in r for r in reasons):
            raise EmptyImageError(
                f"every tile over the overlap of {ctx.ref_path} and {ctx.mov_path} is mostly "
                "nodata",
                "check the nodata values, or a smaller --tile-size",
            )
        raise TooFewMatchesError(
            f"none of the {len(records)} tiles over the overlap gave enough matches "
            f"({'; '.join(r for r in reasons if r)})",
            "try more or larger --tiles, or a larger tile search radius",
        )
    tie = TiePoints.concat(parts)
    with timer.stage("estimate"):
        fit = fit_global(ctx, tie, model, threshold, orientation(coarse))
        add_tile_residuals(records, tie, fit)
    return TiledEstimate(records, tie, fit, len(windows), grid)


def orientation(coarse: CoarseEstimate):
    """The right-angle rotation / flip of the coarse pass's winning search hypothesis
    (:class:`sarreg.search.Hypothesis` at scale 1: the tiles are read at the same pixel size
    anyway), or ``None`` when the moving image was matched as it is."""
    from sarreg.search import Hypothesis

    hyp = None if coarse.search is None else coarse.search.best.hypothesis
    if hyp is None or (hyp.rotation_deg == 0 and not hyp.flip):
        return None
    return Hypothesis(hyp.rotation_deg, hyp.flip)


def fit_global(ctx: RunContext, tie: TiePoints, model: TransformModel, threshold: float, orient):
    """The global ``model`` fit on all tiles' tie points, checked. With an ``orient``ation
    (:func:`orientation`) a linear model is fitted in its frame (``G x_mov``, so that a
    similarity can hold a mirror) and composed, ``M = M_fit @ G``, as on the coarse pass."""
    from sarreg import geometry
    from sarreg.estimate import check_fit

    config, shape = ctx.config.estimate, ctx.mov_info.shape
    initial = np.ones(len(tie), dtype=bool)
    if orient is None or not model.linear:
        return fit_checked(tie, config, model, threshold, shape, initial_inliers=initial)
    g = orient.linear()
    tie_g = replace(tie, xy_mov=geometry.apply_matrix(g, tie.xy_mov))
    fit = fit_checked(tie_g, config, model, threshold, shape, initial_inliers=initial,
                      check=False)  # fmt: skip
    fit = replace(fit, matrix=fit.matrix @ g)
    check_fit(fit, config, model, shape, config.allow_reflection or orient.flip)
    return fit


def add_tile_residuals(records: list[TileRecord], tie: TiePoints, fit) -> None:
    """Add the global fit's residuals of each used tile's tie points to its record."""
    res = np.asarray(fit.residuals)
    inl = np.asarray(fit.inliers, dtype=bool)
    for rec in records:
        sel = tie.tile == rec.index
        if sel.any():
            rec.residuals = residual_summary(res[sel], inl[sel])


def register_tile(
    ctx: RunContext, k: int, win, m0, coarse: CoarseEstimate, dec_ref, dec_mov, tile_model: str
):
    """Read, extract, match and RANSAC-fit one tile. Returns (its record, tie points of the
    tile's inliers or None when it is skipped)."""
    from sarreg import geometry, io, preprocess, scene
    from sarreg.features import extract
    from sarreg.mapping import thin_points
    from sarreg.matching import refine_keypoints

    config, timer = ctx.config, ctx.timer
    rec = TileRecord(k, [int(win.col_off), int(win.row_off), int(win.width), int(win.height)])
    margin = config.tiling.search_radius + 8.0
    mwin = scene.moving_window(m0, win, ctx.mov_info.shape, margin, read_multiple(dec_mov))
    if mwin is None:
        return rec.skip("outside the moving image"), None
    rec.mov_window = [int(mwin.col_off), int(mwin.row_off), int(mwin.width), int(mwin.height)]

    def side(w, d):
        return None if d <= 1.0 else max(16, int(round(max(w.width, w.height) / d)))

    try:
        with timer.stage("read"):
            ref = io.read_raster(
                ctx.ref_path,
                band=config.input.band_ref,
                kind=coarse.ref.kind,
                window=win,
                max_size=side(win, dec_ref),
            )
            mov = io.read_raster(
                ctx.mov_path,
                band=config.input.band_mov,
                kind=coarse.mov.kind,
                window=mwin,
                max_size=side(mwin, dec_mov),
            )
    except EmptyImageError:
        return rec.skip("nodata"), None
    rec.valid_fraction = [float(ref.mask.mean()), float(mov.mask.mean())]
    rec.decimation = [float(ref.decimation), float(mov.decimation)]
    if mostly_nodata(*rec.valid_fraction, config.tiling.min_valid):
        return rec.skip("mostly nodata"), None
    try:
        with timer.stage("preprocess"):
            img_r, kpm_r = preprocess.preprocess(ref.data, ref.mask, ref.kind, ctx.pre_cfg)
            img_m, kpm_m = preprocess.preprocess(mov.data, mov.mask, mov.kind, ctx.pre_cfg)
    except EmptyImageError:
        return rec.skip("featureless (constant)"), None
    if featureless(img_r, kpm_r, kpm_m):
        return rec.skip("featureless (no contrast)"), None
    # a rotated / mirrored moving image: its tile is turned into the reference's orientation
    # (exact pixel copies) before extraction, its keypoints turned back afterwards
    orient = orientation(coarse)
    r_inv = np.eye(3)
    if orient is not None:
        img_m, kpm_m, r_mat = orient.apply(img_m, kpm_m)
        r_inv = np.linalg.inv(r_mat)
    with timer.stage("extract"):
        xcfg = config.extract
        if ctx.pyramid.tiles is not None:
            xcfg = replace(xcfg, scales=tuple(ctx.pyramid.tiles))
        xcfg = replace(xcfg, progress=False, top_k=min(xcfg.top_k, config.tiling.top_k))
        f_ref = extract(ctx.loaded.net, img_r, kpm_r, replace(xcfg, refine_radius=0))
        f_mov = extract(ctx.loaded.net, img_m, kpm_m, xcfg)
    rec.keypoints = [len(f_ref), len(f_mov)]
    fewest = min(len(f_ref), len(f_mov))
    if fewest < TILE_MIN_KEYPOINTS:
        return rec.skip(f"featureless ({fewest} keypoints)"), None

    def prior(xy_mov_turned: np.ndarray) -> np.ndarray:
        xy_mov_work = geometry.apply_matrix(r_inv, xy_mov_turned)
        return ref.from_full_res(geometry.apply_matrix(m0, mov.to_full_res(xy_mov_work)))

    from sarreg.config import transform_model

    local = transform_model(tile_model)
    try:
        with timer.stage("match"):
            matches = match_guided(
                f_ref,
                f_mov,
                config.match,
                prior,
                local,
                config.tiling.search_radius / ref.decimation,
                fallback=False,
            )
            f_mov = refine_keypoints(f_ref, f_mov, matches)
        if orient is not None:  # keypoints back in the moving tile's own pixels
            kp = geometry.apply_matrix(r_inv, f_mov.keypoints.astype(np.float64))
            f_mov = replace(f_mov, keypoints=kp.astype(np.float32), image_shape=mov.data.shape)
        rec.matches = len(matches)
        with timer.stage("estimate"):
            tie = TiePoints.from_matches(ref, mov, f_ref, f_mov, matches, tile=k)
            threshold = rec.threshold_px = config.estimate.ransac_threshold * ref.decimation
            # fitted in the orientation's frame (a similarity cannot mirror)
            xy_g = (
                tie.xy_mov if orient is None else geometry.apply_matrix(orient.linear(), tie.xy_mov)
            )
            fit = local.fit(xy_g, tie.xy_ref, threshold, config.estimate.seed)
    except SarregError as err:  # too few matches / inliers in this tile
        return rec.skip(f"too few matches ({err.message})"), None
    if fit.n_inliers < max(config.estimate.min_inliers, local.min_points):
        return rec.skip(f"too few inliers ({fit.n_inliers})"), None
    inl = np.flatnonzero(fit.inliers)
    keep = inl[thin_points(tie.xy_ref[inl], -tie.similarity[inl], config.tiling.max_points)]
    rec.status = TileStatus.used
    rec.tile_inliers, rec.tile_rmse_px = int(fit.n_inliers), float(fit.rmse)
    rec.tie_points = int(len(keep))
    return rec, tie.subset(keep)
