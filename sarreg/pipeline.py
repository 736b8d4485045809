"""``register()``: the one orchestrator of a registration, from two files to an output and a report.

Every registration runs the same stages, each in its own module:

1. ``config``: validate every setting (:func:`sarreg.config.validate_config`, ConfigError)
   and check every output path (:func:`sarreg.output.check_outputs`) before any work;
2. ``inputs``: both inputs' metadata, georeferencing prior and overlap
   (:func:`sarreg.inputs.open_inputs`), then the model;
3. ``coarse``: both images read whole, decimated to at most ``coarse_size`` (1024) pixels
   (smaller images as they are), normalized, extracted, matched, fitted
   (:func:`sarreg.coarse.estimate_coarse`);
4. ``tiles``: when an image is larger than the coarse read, full-resolution tiles over the
   overlap matched with the coarse transform as prior, and one global fit on all tiles' tie
   points (:func:`sarreg.tiles.refine_with_tiles`);
5. ``output``: the output image (``warp``), the JSON report (:func:`sarreg.report.build_report`),
   tie points and plot, written as a group.

Coordinates: keypoints are extracted on the (possibly decimated or windowed) arrays and
converted to full-resolution pixel centres of each file before estimation, so the fitted matrix
``M`` maps full-resolution moving pixel centres to full-resolution reference pixel centres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sarreg import __version__
from sarreg.config import RegisterConfig, pyramid_plan, transform_model
from sarreg.errors import EmptyImageError, TooFewMatchesError
from sarreg.inputs import RunContext, Timer, coarse_read_side, open_inputs
from sarreg.output import check_outputs, gcp_indices, remove_quietly, write_output

if TYPE_CHECKING:
    from sarreg.features import ExtractConfig, Features

log = logging.getLogger(__name__)

__all__ = [
    "RegisterConfig",
    "RegistrationResult",
    "extract_file",
    "load_model",
    "register",
    "validate_config",
]


@dataclass
class RegistrationResult:
    """What ``register`` found and wrote.

    ``matrix`` maps full-resolution moving pixel centres to reference pixel centres (3x3);
    for the non-linear models (poly2, poly3, tps) it is the least-squares affine approximation
    and ``mapping`` is the fitted :class:`sarreg.mapping.Mapping`. ``tiles``: per-tile (tiled
    registrations) or per-region figures, as in the report; ``windowed``: the coarse pass was
    refined by full-resolution tiles. ``rmse`` is the keypoint scatter (inlier RMSE);
    ``predicted_error`` the expected error of the transform itself (reference px, RMS over the
    moving image's corners and centre, :func:`sarreg.uncertainty.estimate_error`);
    ``verification`` the report's record of the independent check (:mod:`sarreg.verify`).
    """

    matrix: np.ndarray
    model: str
    n_matches: int
    n_inliers: int
    rmse: float
    loo_rmse: float
    output: str | None
    report_path: str | None
    report: dict
    timings: dict[str, float]
    mapping: object | None = None
    windowed: bool = False
    tiles: list[dict] = field(default_factory=list)
    predicted_error: float = float("nan")
    verification: dict | None = None


@lru_cache(maxsize=4)
def _load_model_cached(path: str | None):
    """Load a checkpoint once per process (a batch worker reuses it across tasks). The first
    call imports PyTorch, with the garbage collector paused (:mod:`sarreg.gctools`)."""
    from sarreg.gctools import gc_paused

    with gc_paused():
        from sarreg.model import runtime
        from sarreg.model.checkpoint import load_checkpoint, load_default_model

    loaded = load_default_model() if path is None else load_checkpoint(path)
    runtime.prepare_inference(loaded.net, loaded.path)  # allocator, runtime
    return loaded


def load_model(path: str | None):
    """The network to use: ``path`` or the bundled default model (cached per process)."""
    return _load_model_cached(None if path is None else str(Path(path).resolve()))


def validate_config(config: RegisterConfig) -> None:
    """Raise :class:`~sarreg.errors.ConfigError` for any setting out of its valid range (every
    option of the config and its extract / match settings, see :data:`sarreg.config.RULES`)."""
    from sarreg.config import validate_config as _validate

    _validate(config)


@dataclass
class Estimate:
    """The estimation stages' result: the coarse pass (kept for the plot and the report), the
    final tie points and fit, the tile records (or residual regions) and the report entries
    of the coarse pass and the tile grid (None without tiles)."""

    coarse: object  # sarreg.coarse.CoarseEstimate
    tie: object  # sarreg.estimate.TiePoints
    fit: object  # sarreg.geometry.TransformFit
    tiles: list[dict]
    coarse_info: dict | None = None
    tile_grid: dict | None = None


def register(
    ref_path: str | Path,
    mov_path: str | Path,
    out_path: str | Path | None,
    config: RegisterConfig | None = None,
) -> RegistrationResult:
    """Register ``mov_path`` onto ``ref_path`` and write ``out_path`` plus a JSON report.

    ``out_path`` may be ``None`` to only estimate the transform (no image, report only if
    ``config.output.report`` is set). Raises a :class:`~sarreg.errors.SarregError` subclass for
    every bad input; nothing is left half-written. The stages are listed in the module docstring.
    """
    config = config or RegisterConfig()
    validate_config(config)
    _warn_deprecated(config)
    ref_path, mov_path = str(ref_path), str(mov_path)
    report_path = check_outputs(out_path, config, (ref_path, mov_path))
    out_path = None if out_path is None else str(out_path)

    ctx = open_context(ref_path, mov_path, config)
    est = estimate(ctx)
    quality = check_result(ctx, est)
    gcp_idx = gcp_indices(est.fit, est.tie.xy_mov, config)
    report = _write_outputs(ctx, est, out_path, report_path, gcp_idx, quality)

    return RegistrationResult(
        matrix=est.fit.matrix,
        model=est.fit.model,
        n_matches=len(est.tie),
        n_inliers=int(est.fit.n_inliers),
        rmse=float(est.fit.rmse),
        loo_rmse=float(est.fit.loo_rmse),
        output=report["output"],
        report_path=report_path,
        report=report,
        timings=dict(ctx.timer.times),
        mapping=est.fit.mapping,
        windowed=est.coarse_info is not None and est.coarse_info["tiles_used"] > 0,
        tiles=est.tiles,
        predicted_error=quality["error_estimate"]["rms_px"],
        verification=quality["verification"],
    )


def open_context(ref_path: str, mov_path: str, config: RegisterConfig) -> RunContext:
    """The context every stage reads: both inputs' metadata and georeferencing prior
    (:func:`sarreg.inputs.open_inputs`), the model and its preprocessing, and the pyramid
    plan, decided once; with a fresh stage timer."""
    timer = Timer()
    with timer.stage("read"):
        inputs = open_inputs(ref_path, mov_path, config)
    with timer.stage("model"):
        loaded, pre_cfg = _model_and_preprocessing(config)
    plan = pyramid_plan(config, inputs.georef, coarse_read_side(inputs, config))
    return RunContext(inputs, loaded, pre_cfg, config, plan, timer)


def _warn_deprecated(config: RegisterConfig) -> None:
    if config.tiling.window_size is not None:
        log.warning(
            "--window-size / window_size is deprecated and has no effect: every registration "
            "is coarse to fine (coarse pass, then full-resolution tiles for larger images)"
        )


def _model_and_preprocessing(config: RegisterConfig):
    """The loaded model and the preprocessing it was trained with."""
    from sarreg import preprocess

    loaded = load_model(config.model)
    return loaded, preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})


def estimate(ctx: RunContext) -> Estimate:
    """Coarse pass, then (images larger than the coarse read) full-resolution tiles and the
    global fit; without tiles the coarse fit of the configured model is the result."""
    from sarreg.coarse import estimate_coarse, needs_tiles, read_coarse
    from sarreg.estimate import fit_checked, region_stats
    from sarreg.tiles import refine_with_tiles

    config, timer = ctx.config, ctx.timer
    model = transform_model(config.estimate.transform)
    with timer.stage("read"):
        ref, mov = read_coarse(ctx)
    tiled = needs_tiles(ref, mov, ctx.inputs.prior_scale)
    coarse_model = transform_model(model.local) if tiled else model
    coarse = estimate_coarse(ctx, ref, mov, coarse_model, final=not tiled, seed=tiled)
    if not tiled:
        from sarreg.estimate import refit_refined

        with timer.stage("estimate"):
            tie, fit, _ = refit_refined(ctx, coarse, model)
            regions = region_stats(ctx.ref_info.shape, config.tiling.tiles or 4, tie.xy_ref, fit)
        return Estimate(coarse, tie, fit, regions)
    log.info(
        "coarse pass (decimation %.3g / %.3g): %d inliers, rmse %.2f px",
        ref.decimation,
        mov.decimation,
        coarse.fit.n_inliers,
        coarse.fit.rmse,
    )
    try:
        tiled_est = refine_with_tiles(ctx, coarse, model)
    except (EmptyImageError, TooFewMatchesError) as err:
        # no tile gave tie points (mostly nodata, featureless), or their global fit failed:
        # the coarse pass's checked fit of the configured model is the result, at coarse
        # precision
        log.warning("the full-resolution tiles gave no fit (%s); using the coarse pass", err)
        seed_top_k = config.tiling.coarse_top_k
        if ctx.pyramid.seed is not None or (
            seed_top_k is not None and seed_top_k < config.extract.top_k
        ):
            # the result now: the coarse pass again on its full level, with all keypoints
            coarse = estimate_coarse(ctx, ref, mov, coarse_model, final=False)
        fit = coarse.fit
        if coarse_model is not model:
            with timer.stage("estimate"):
                fit = fit_checked(
                    coarse.tie, config.estimate, model, coarse.fit.threshold, ctx.mov_info.shape
                )
        with timer.stage("estimate"):
            regions = region_stats(
                ctx.ref_info.shape, config.tiling.tiles or 4, coarse.tie.xy_ref, fit
            )
        info = coarse.to_dict(0, 0)
        info["refined_by_tiles"] = False
        info["tiles_failed"] = str(err)
        return Estimate(coarse, coarse.tie, fit, regions, info)
    info = coarse.to_dict(tiled_est.planned, len(tiled_est.used))
    info["refined_by_tiles"] = True
    records = [r.to_dict() for r in tiled_est.records]
    return Estimate(coarse, tiled_est.tie, tiled_est.fit, records, info, tiled_est.grid)


def check_result(ctx: RunContext, est: Estimate) -> dict:
    """Verify the final fit on the coarse images, independently of the tie points
    (:mod:`sarreg.verify`; refused unless ``--no-verify``), and estimate its error
    (:mod:`sarreg.uncertainty`). Returns the report entries ``verification``,
    ``error_estimate``, ``search`` and ``keypoint_scatter_px``."""
    from sarreg import geometry, uncertainty, verify

    fit, tie, config, c = est.fit, est.tie, ctx.config, est.coarse
    ver = c.verification
    if ver is None or fit is not c.fit:  # tiles (or a refit) changed the coarse fit verified
        with ctx.timer.stage("verify"):
            ver = verify.verify_fit(c.ref, c.mov, c.img_ref, c.img_mov, fit.matrix,
                                    mapping=fit.mapping)  # fmt: skip
    # the windows' residual shifts correct a biased linear fit (checked again)
    fit, ver, corr = verify.correct_by_windows(c.ref, c.mov, c.img_ref, c.img_mov, fit, tie,
                                               ver, ctx.mov_info.shape)  # fmt: skip
    est.fit = fit
    verify.refuse_unless_passed(ver, config.estimate.verify)
    inl = np.asarray(fit.inliers, dtype=bool)
    t = ctx.ref_info.transform
    px = None if t is None else float(np.sqrt(abs(t.determinant)))  # side of a square pixel
    model = fit.model if fit.model in geometry.MODELS else "affine"
    pre = None  # the frame the model was fitted in (a similarity cannot mirror)
    if c.search is not None and not c.search.best.hypothesis.is_identity:
        pre = c.search.best.hypothesis.linear()
    err = uncertainty.estimate_error(
        model,
        tie.xy_mov[inl],
        tie.xy_ref[inl],
        ctx.mov_info.shape,
        fit.matrix,
        ver,
        px,
        pre,
        corrected=corr is not None and corr.applied,
    )
    return {
        "verification": {**ver.to_dict(), "correction": corr and corr.to_dict()},
        "error_estimate": err.to_dict(),
        "search": None if c.search is None else c.search.to_dict(),
        "keypoint_scatter_px": float(fit.rmse),
    }


def _write_outputs(
    ctx: RunContext, est: Estimate, out_path, report_path, gcp_idx, quality: dict
) -> dict:
    """Output image, report (with the ``quality`` entries of :func:`check_result`), tie points
    and plot, as a group: a failure removes what this run wrote. Returns the report."""
    from sarreg.report import ImageEntry, build_report, plot_coarse, write_report

    config, timer, inputs = ctx.config, ctx.timer, ctx.inputs
    written: list[str] = []  # outputs of this run: removed again if a later one fails
    try:
        out_written = None
        if out_path is not None:
            with timer.stage("write"):
                out_written = write_output(
                    out_path,
                    inputs.mov_path,
                    inputs.ref_info,
                    est.fit,
                    est.tie.xy_ref,
                    est.tie.xy_mov,
                    gcp_idx,
                    config,
                )
            written.append(out_written)
        timer.times["total"] = sum(timer.times.values())
        c = est.coarse
        report = build_report(
            version=__version__,
            ref=ImageEntry(inputs.ref_path, inputs.ref_info, c.ref, len(c.feat_ref)),
            mov=ImageEntry(inputs.mov_path, inputs.mov_info, c.mov, len(c.feat_mov)),
            output=out_written,
            tie=est.tie,
            fit=est.fit,
            gcp_idx=gcp_idx,
            loaded=ctx.loaded,
            config=config,
            timings=timer.times,
            prior_full=inputs.prior_full,
            coarse=est.coarse_info,
            tiles=est.tiles,
            pyramid=ctx.pyramid.to_dict(),
            tile_grid=est.tile_grid,
        )
        report.update(quality)
        if report_path is not None:
            write_report(report, report_path)
            written.append(report_path)
        if config.output.gcps:
            from sarreg.tiepoints import write_tie_points

            write_tie_points(report, config.output.gcps, overwrite=config.output.overwrite)
            written.append(config.output.gcps)
        from sarreg import gis
        from sarreg.estimate import work_to_full

        gis.write_outputs(
            config.output, inputs.ref_info, est.fit, c.img_ref, work_to_full(c.ref), est.tie.xy_ref,
            written,
        )  # fmt: skip
        if config.output.plot:
            plot_coarse(config.output.plot, c, est.fit, out_written is not None)
    except BaseException:
        remove_quietly(written)
        raise
    return report


def extract_file(
    image_path: str | Path,
    out_path: str | Path,
    model: str | None = None,
    band: int = 1,
    kind: str = "auto",
    max_size: int = 4096,
    config: ExtractConfig | None = None,
    overwrite: bool = False,
) -> Features:
    """Extract features of one image and save them as ``.npz`` (see ``Features.to_npz``).

    An image larger than ``max_size`` on its long side is read decimated to it (area average,
    :func:`sarreg.io.read_raster`); keypoints (x, y pixel centres) and scales are converted to
    the full-resolution pixel grid of the file, and ``image_shape`` is the file's ``(H, W)``.
    An existing ``out_path`` is replaced only with ``overwrite``.
    """
    from sarreg import io, preprocess
    from sarreg.atomic import atomic_write, check_output_path
    from sarreg.features import ExtractConfig, extract
    from sarreg.outputs import guard_outputs

    guard_outputs([("output", out_path)], [("image", image_path), ("model", model)])
    check_output_path(str(out_path), overwrite=overwrite)
    loaded = load_model(model)
    pre_cfg = preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})
    raster = io.read_raster(str(image_path), band=band, kind=kind, max_size=max_size)
    img, kp_mask = preprocess.preprocess(
        raster.data, raster.mask, raster.kind, pre_cfg, name=f"the image {image_path}"
    )
    # local descriptors are not saved: don't compute them
    feats = extract(loaded.net, img, kp_mask, replace(config or ExtractConfig(), refine_radius=0))
    feats = replace(
        feats,
        keypoints=raster.to_full_res(feats.keypoints.astype(np.float64)).astype(np.float32),
        scales=(feats.scales * raster.decimation).astype(np.float32),
        image_shape=tuple(raster.full_shape),
    )
    with atomic_write(str(out_path), overwrite=overwrite) as tmp:
        feats.to_npz(tmp)
    return feats
