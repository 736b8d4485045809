"""``register()``: the one orchestrator of a registration, from two files to an output and a report.

Stages: read (``io``) -> normalize (``preprocess``) -> extract (``features``, with the network of
``model``) -> match (``matching``, guided by the georeferencing when both inputs have it) ->
estimate (``geometry``: USAC MAGSAC++ then least squares) -> write (``warp``) -> report.

Coordinates: keypoints are extracted on the (possibly decimated) arrays and converted to
full-resolution pixel centres of each file before estimation, so the fitted matrix ``M`` maps
full-resolution moving pixel centres to full-resolution reference pixel centres.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from sarreg import __version__
from sarreg.errors import (
    EmptyImageError,
    NotGeoreferencedError,
    SarregError,
    TooFewMatchesError,
)
from sarreg.features import ExtractConfig, Features
from sarreg.matching import MatchConfig, Matches, refine_keypoints

log = logging.getLogger(__name__)

MODES = ("resample", "georef")
GCP_SUFFIXES = (".geojson", ".json", ".csv")
#: reference tiles whose normalized ([0, 1]) values vary less than this (std) are skipped
TILE_MIN_CONTRAST = 0.01
RESAMPLING = ("bilinear", "nearest", "cubic")


@dataclass
class RegisterConfig:
    """Settings of one registration. Defaults are what ``sarreg register`` uses.

    Attributes:
        model: checkpoint path; ``None`` = the model bundled with sarreg.
        transform: 'translation' | 'similarity' | 'affine' | 'homography'.
        mode: 'resample' (moving image resampled onto the reference grid) or 'georef'
            (moving pixels unchanged, corrected geotransform, or GCPs for a homography).
        resampling: 'bilinear' | 'nearest' | 'cubic' (mode 'resample').
        band_ref, band_mov: 1-based bands.
        kind_ref, kind_mov: 'auto' | 'power' | 'amplitude' | 'db' | 'display'.
        max_size: images whose larger side exceeds this are read decimated (from overviews
            when present) so that the work happens at about this size.
        use_prior: use the georeferencing of both images to restrict matches to
            ``search_radius`` reference pixels (at work resolution) of the predicted position.
        search_radius: see ``use_prior``.
        ransac_threshold: inlier threshold in reference pixels at work resolution.
        scale_range: plausible scale of the transform (reference px per moving px).
        georef_scales: pyramid used when both images are georeferenced (they are then read
            at about the same pixel size, so little scale search is needed) and
            ``extract.scales`` is not set.
        min_inliers: fewest RANSAC inliers accepted (at least the model's own minimum);
            fewer means the images could not be registered reliably.
        extract, match: feature extraction and matching settings.
        overwrite: replace existing outputs.
        report: path of the JSON report; ``None`` = next to the output (``OUT.json``).
        plot: path of a PNG with the matches and a checkerboard overlay, or ``None``.
        progress: show progress bars.
        seed: RANSAC seed.
        window_size: images whose larger side exceeds this are registered window by window
            (large-scene path, bounded memory): a coarse pass on reads decimated to
            ``coarse_size`` gives a first transform, then ``tiles x tiles`` full-resolution
            tiles of ``tile_size`` pixels spread over the overlap of the two footprints are
            read as windows, extracted and matched with the coarse transform as prior, and the
            final transform is fitted on all tiles' RANSAC inliers. ``None`` or 0: always the
            in-memory path (reads decimated to ``max_size``).
        tiles: tile grid per side (large-scene path); also the grid of the per-region
            residuals reported by the in-memory path.
        tile_size: tile side in pixels at work resolution (reference pixels, or moving pixels
            when the reference is finer and read decimated to them); large-scene path.
        coarse_size: larger side of the decimated reads of the coarse pass.
        tile_search_radius: prior search radius in full-resolution reference pixels around
            the coarse transform's prediction, in the tiles.
        tile_scales: pyramid used in the tiles (the coarse pass put both images at the same
            pixel size) unless ``extract.scales`` is set.
        tile_min_valid: tiles (and their moving windows) with a smaller fraction of valid
            pixels are skipped as mostly nodata.
        tile_max_points: at most this many RANSAC inliers kept per tile (spread over it) for
            the global fit.
        tile_top_k: keypoints kept per tile and image (unless ``extract.top_k`` is smaller).
        gcps: path of a tie-point export, ``.geojson`` (points in the reference CRS) or
            ``.csv``; ``None`` = none.
        max_gcps: at most this many inlier tie points (spread over the image) are written as
            GCPs into ``--mode georef`` outputs of the non-linear models (a homography's
            output gets all its inliers).
        verify: refuse a result that fails the independent check of :mod:`sarreg.verify`
            (exit 7); False (``--no-verify``): report the check only.
        allow_reflection: mirrored images may be registered (the search includes the flip);
            False: a mirrored pair is refused (exit 8).
        search: when the plain fit is weak or fails the check, retry without the
            georeferencing prior and over rotations by 90 deg, flips and scales
            (:mod:`sarreg.search`).
    """

    model: str | None = None
    transform: str = "affine"
    mode: str = "resample"
    resampling: str = "bilinear"
    band_ref: int = 1
    band_mov: int = 1
    kind_ref: str = "auto"
    kind_mov: str = "auto"
    max_size: int = 4096
    use_prior: bool = True
    search_radius: float = 64.0
    ransac_threshold: float = 3.0
    scale_range: tuple[float, float] = (0.1, 10.0)
    min_inliers: int = 10
    georef_scales: tuple[float, ...] = (1.0, 2**-0.5)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    overwrite: bool = False
    report: str | None = None
    plot: str | None = None
    progress: bool = False
    seed: int = 0
    window_size: int | None = 4096
    tiles: int = 4
    tile_size: int = 512
    coarse_size: int = 1024
    tile_search_radius: float = 24.0
    tile_scales: tuple[float, ...] = (1.0,)
    tile_min_valid: float = 0.5
    tile_max_points: int = 400
    tile_top_k: int = 2000
    gcps: str | None = None
    max_gcps: int = 2000
    verify: bool = True
    allow_reflection: bool = False
    search: bool = True


@dataclass
class RegistrationResult:
    """What ``register`` found and wrote.

    ``matrix`` maps full-resolution moving pixel centres to reference pixel centres (3x3);
    for the non-linear models (poly2, poly3, tps) it is the least-squares affine approximation
    and ``mapping`` is the fitted :class:`sarreg.mapping.Mapping`. ``tiles``: per-tile (large
    scenes) or per-region figures, as in the report. ``rmse`` is the keypoint scatter (inlier
    RMSE); ``predicted_error`` the expected error of the transform itself (reference px, RMS
    over the moving image's corners and centre, :func:`sarreg.uncertainty.estimate_error`);
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


@dataclass
class _Input:
    """One input image through the pipeline: its file, metadata, the array read, features."""

    path: str
    info: object  # sarreg.io.RasterInfo
    raster: object  # sarreg.io.Raster (work resolution)
    features: Features


class _Timer:
    """Wall-clock time per named stage, in seconds."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


@lru_cache(maxsize=4)
def _load_model_cached(path: str | None):
    """Load a checkpoint once per process (a batch worker reuses it across tasks)."""
    from sarreg.model.checkpoint import load_checkpoint, load_default_model

    return load_default_model() if path is None else load_checkpoint(path)


def load_model(path: str | None):
    """The network to use: ``path`` or the bundled default model (cached per process)."""
    return _load_model_cached(None if path is None else str(Path(path).resolve()))


def validate_config(config: RegisterConfig) -> None:
    """Raise :class:`~sarreg.errors.ConfigError` for an unknown transform, mode or resampling."""
    from sarreg.errors import ConfigError
    from sarreg.geometry import MODELS
    from sarreg.mapping import NONLINEAR_MODELS

    models = MODELS + NONLINEAR_MODELS
    if config.transform not in models:
        raise ConfigError(
            f"unknown transform {config.transform!r}", f"choose one of {', '.join(models)}"
        )
    if config.tiles < 1 or config.tile_size < 128 or config.coarse_size < 256:
        raise ConfigError(
            f"bad tiling: tiles={config.tiles}, tile size={config.tile_size}, coarse size="
            f"{config.coarse_size}",
            "use --tiles >= 1, --tile-size >= 128 and a coarse size >= 256",
        )
    if config.window_size is not None and config.window_size < 0:
        raise ConfigError(
            f"--window-size must be >= 0, got {config.window_size}", "use 0 to disable"
        )
    if config.gcps is not None and Path(config.gcps).suffix.lower() not in GCP_SUFFIXES:
        raise ConfigError(
            f"unknown tie-point export format {Path(config.gcps).suffix or config.gcps!r}",
            f"name the --gcps file {' or '.join('*' + x for x in GCP_SUFFIXES)}",
        )
    if config.mode not in MODES:
        raise ConfigError(f"unknown mode {config.mode!r}", f"choose one of {', '.join(MODES)}")
    if config.resampling not in RESAMPLING:
        raise ConfigError(
            f"unknown resampling {config.resampling!r}", f"choose one of {', '.join(RESAMPLING)}"
        )


def _work_sizes(ref_info, mov_info, config: RegisterConfig, prior_scale: float | None):
    """Largest side to read each image at, so that both are at about the same pixel size.

    ``prior_scale``: reference pixels per moving pixel from the georeferencing (or ``None``).
    Returns (max_size_ref, max_size_mov); ``None`` means full resolution.
    """
    ref_side = max(ref_info.shape)
    mov_side = max(mov_info.shape)
    dec_ref = max(1.0, ref_side / config.max_size)
    dec_mov = max(1.0, mov_side / config.max_size)
    if prior_scale is not None and prior_scale > 0:
        # pixel size ratio: one moving pixel covers prior_scale reference pixels.
        if prior_scale > 1.25:  # reference finer: decimate it to the moving pixel size
            dec_ref = max(dec_ref, prior_scale * dec_mov)
        elif prior_scale < 0.8:  # moving finer
            dec_mov = max(dec_mov, dec_ref / prior_scale)
    size_ref = None if dec_ref <= 1.0 else int(math.ceil(ref_side / dec_ref))
    size_mov = None if dec_mov <= 1.0 else int(math.ceil(mov_side / dec_mov))
    return size_ref, size_mov


def register(
    ref_path: str | Path,
    mov_path: str | Path,
    out_path: str | Path | None,
    config: RegisterConfig | None = None,
) -> RegistrationResult:
    """Register ``mov_path`` onto ``ref_path`` and write ``out_path`` plus a JSON report.

    ``out_path`` may be ``None`` to only estimate the transform (no image, report only if
    ``config.report`` is set). Images whose larger side exceeds ``config.window_size`` are
    registered window by window (see :class:`RegisterConfig`). Raises a
    :class:`~sarreg.errors.SarregError` subclass for every bad input; nothing is left
    half-written.
    """
    from sarreg import geometry, io, preprocess

    config = config or RegisterConfig()
    validate_config(config)
    timer = _Timer()
    ref_path, mov_path = str(ref_path), str(mov_path)
    report_path = _check_outputs(out_path, config)
    out_path = None if out_path is None else str(out_path)

    with timer.stage("read"):
        ref_info = io.raster_info(ref_path, band=config.band_ref)
        mov_info = io.raster_info(mov_path, band=config.band_mov)
        georef = ref_info.transform is not None and mov_info.transform is not None
        if config.mode == "georef" and ref_info.transform is None:
            raise NotGeoreferencedError(
                f"--mode georef needs a georeferenced reference, but {ref_path} has no "
                "geotransform",
                "use --mode resample, or a georeferenced reference image",
            )
        if config.gcps and Path(config.gcps).suffix.lower() != ".csv" and not georef:
            raise NotGeoreferencedError(
                f"a GeoJSON tie-point export needs georeferenced images, but {ref_path} or "
                f"{mov_path} has no geotransform",
                "name the --gcps file *.csv",
            )
        prior_full = None
        prior_scale = None
        if georef:
            geometry.check_overlap(
                ref_info.transform,
                ref_info.crs,
                ref_info.shape,
                mov_info.transform,
                mov_info.crs,
                mov_info.shape,
                ref_name=ref_path,
                mov_name=mov_path,
            )
            prior_full = geometry.prior_from_georef(
                ref_info.transform, ref_info.crs, mov_info.transform, mov_info.crs
            )
            prior_scale = _prior_scale(prior_full, mov_info.shape)

    with timer.stage("model"):
        loaded = load_model(config.model)
        pre_cfg = preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})

    ctx = _Context(
        ref_path, mov_path, ref_info, mov_info, georef, prior_full, prior_scale, loaded, pre_cfg,
        config, timer,
    )  # fmt: skip
    windowed = bool(config.window_size) and (
        max(ref_info.shape) > config.window_size or max(mov_info.shape) > config.window_size
    )
    est = _estimate_tiled(ctx) if windowed else _estimate_in_memory(ctx, config, final=True)
    fit, tie = est.fit, est.tie
    if not windowed:
        with timer.stage("estimate"):
            est.tiles = _region_stats(ref_info.shape, config.tiles, tie.xy_ref, fit)

    quality = _check_result(ctx, est, windowed)
    gcp_idx = _gcp_indices(fit, tie.xy_mov, config)
    written: list[str] = []  # outputs of this run: removed again if a later one fails
    try:
        out_written = None
        if out_path is not None:
            with timer.stage("write"):
                out_written = _write_output(
                    out_path, mov_path, ref_info, fit, tie.xy_ref, tie.xy_mov, gcp_idx, config
                )
            written.append(out_written)

        timer.times["total"] = sum(timer.times.values())
        report = _build_report(
            _Input(ref_path, ref_info, est.ref, est.feat_ref),
            _Input(mov_path, mov_info, est.mov, est.feat_mov),
            out_written, tie, fit, gcp_idx, loaded, config, timer.times, prior_full, est,
        )  # fmt: skip
        report.update(quality)
        if report_path is not None:
            from sarreg.report import write_report

            write_report(report, report_path)
            written.append(report_path)
        if config.gcps:
            from sarreg.tiepoints import write_tie_points

            write_tie_points(report, config.gcps, overwrite=config.overwrite)
            written.append(config.gcps)
        if config.plot:
            _plot(config.plot, est, fit, out_written)
    except BaseException:
        _remove_quietly(written)
        raise

    return RegistrationResult(
        matrix=fit.matrix,
        model=fit.model,
        n_matches=len(tie),
        n_inliers=int(fit.n_inliers),
        rmse=float(fit.rmse),
        loo_rmse=float(fit.loo_rmse),
        output=out_written,
        report_path=report_path,
        report=report,
        timings=dict(timer.times),
        mapping=fit.mapping,
        windowed=windowed,
        tiles=est.tiles,
        predicted_error=quality["error_estimate"]["rms_px"],
        verification=quality["verification"],
    )


def _check_result(ctx: _Context, est: _Estimate, windowed: bool) -> dict:
    """Verify the final fit independently (:mod:`sarreg.verify`; refused unless
    ``--no-verify``) and estimate its error (:mod:`sarreg.uncertainty`). Returns the report
    entries ``verification``, ``error_estimate``, ``search``, ``keypoint_scatter_px``."""
    from sarreg import geometry, uncertainty, verify

    fit, tie, config = est.fit, est.tie, ctx.config
    ver = est.verification
    if windowed or ver is None:  # the tiles' fit differs from the coarse one verified
        with ctx.timer.stage("verify"):
            ver = verify.verify_fit(
                est.ref, est.mov, est.img_ref, est.img_mov, fit.matrix, mapping=fit.mapping
            )
    verify.refuse_unless_passed(ver, config.verify)
    inl = np.asarray(fit.inliers, dtype=bool)
    t = ctx.ref_info.transform
    px = None if t is None else float(np.sqrt(abs(t.a * t.e - t.b * t.d)))
    model = fit.model if fit.model in geometry.MODELS else "affine"
    pre = None  # the frame the model was fitted in (a similarity cannot mirror)
    if est.search is not None and not est.search.best.hypothesis.is_identity:
        pre = est.search.best.hypothesis.linear()
    err = uncertainty.estimate_error(
        model, tie.xy_mov[inl], tie.xy_ref[inl], ctx.mov_info.shape, fit.matrix, ver, px, pre
    )
    return {
        "verification": ver.to_dict(),
        "error_estimate": err.to_dict(),
        "search": None if est.search is None else est.search.to_dict(),
        "keypoint_scatter_px": float(fit.rmse),
    }


def _remove_quietly(paths: list[str]) -> None:
    """Delete the files of a registration that failed part-way (outputs go as a group)."""
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass


def _check_outputs(out_path, config: RegisterConfig) -> str | None:
    """Check every output path before any work; returns the report path (or None)."""
    from sarreg.atomic import check_output_path

    report_path = None
    if out_path is not None:
        check_output_path(str(out_path), overwrite=config.overwrite)
        report_path = config.report or str(Path(str(out_path)).with_suffix(".json"))
    elif config.report:
        report_path = config.report
    if report_path is not None:
        check_output_path(report_path, overwrite=config.overwrite)
    for extra in (config.plot, config.gcps):
        if extra:
            check_output_path(extra, overwrite=config.overwrite)
    return report_path


@dataclass
class _Context:
    """What both estimation paths need: inputs, their metadata, the model and settings."""

    ref_path: str
    mov_path: str
    ref_info: object  # sarreg.io.RasterInfo
    mov_info: object
    georef: bool
    prior_full: object  # callable (N, 2) moving px -> reference px, full resolution, or None
    prior_scale: float | None
    loaded: object  # sarreg.model.checkpoint.LoadedModel
    pre_cfg: object  # sarreg.preprocess.PreprocessConfig
    config: RegisterConfig
    timer: _Timer


@dataclass
class _TiePoints:
    """Tie points in full-resolution pixel centres, ``(N, 2)`` float64 each, with per-point
    match similarity, keypoint scores and the tile they came from (-1: in-memory path)."""

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
    ) -> _TiePoints:
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

    def subset(self, idx) -> _TiePoints:
        """The tie points selected by an index array or boolean mask."""
        return _TiePoints(*(getattr(self, f.name)[idx] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[_TiePoints]) -> _TiePoints:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass
class _Estimate:
    """One estimation: the work-resolution arrays/features/matches (the coarse pass on the
    large-scene path, kept for the plot and report), the tie points and the final fit."""

    ref: object  # sarreg.io.Raster
    mov: object
    img_ref: np.ndarray
    img_mov: np.ndarray
    feat_ref: Features
    feat_mov: Features
    matches: Matches
    work_inliers: np.ndarray  # (len(matches),) bool, inliers of the fit at work resolution
    tie: _TiePoints
    fit: object  # sarreg.geometry.TransformFit
    tiles: list[dict] = field(default_factory=list)
    coarse: dict | None = None
    verification: object | None = None  # sarreg.verify.Verification of ``fit`` at work res
    search: object | None = None  # sarreg.search.SearchResult


def _estimate_in_memory(ctx: _Context, config: RegisterConfig, final: bool) -> _Estimate:
    """Read both images (decimated to ``config.max_size``), extract, match, fit ``config``'s
    transform. ``final``: this fit is the registration (else the coarse pass)."""
    from sarreg import io, preprocess
    from sarreg.features import extract

    timer = ctx.timer
    with timer.stage("read"):
        size_ref, size_mov = _work_sizes(ctx.ref_info, ctx.mov_info, config, ctx.prior_scale)
        ref = io.read_raster(
            ctx.ref_path, band=config.band_ref, kind=config.kind_ref, max_size=size_ref
        )
        mov = io.read_raster(
            ctx.mov_path, band=config.band_mov, kind=config.kind_mov, max_size=size_mov
        )

    with timer.stage("preprocess"):
        img_ref, kp_mask_ref = preprocess.preprocess(ref.data, ref.mask, ref.kind, ctx.pre_cfg)
        img_mov, kp_mask_mov = preprocess.preprocess(mov.data, mov.mask, mov.kind, ctx.pre_cfg)

    with timer.stage("extract"):
        xcfg = config.extract
        if ctx.georef and xcfg.scales is None and config.georef_scales:
            xcfg = replace(xcfg, scales=tuple(config.georef_scales))
        # only the moving keypoints are refined: the reference keeps no local descriptors
        feat_ref = extract(ctx.loaded.net, img_ref, kp_mask_ref, replace(xcfg, refine_radius=0))
        feat_mov = extract(ctx.loaded.net, img_mov, kp_mask_mov, xcfg)
    for name, path, feat in (
        ("reference", ctx.ref_path, feat_ref),
        ("moving", ctx.mov_path, feat_mov),
    ):
        if len(feat) < 8:
            raise EmptyImageError(
                f"the {name} image {path} gave only {len(feat)} keypoints (featureless?)",
                "check --band and that the image holds radar backscatter with structure",
            )

    # Prior at work resolution: moving work px -> reference work px.
    prior_work = None
    if ctx.georef and config.use_prior:
        prior_work = _prior_at_work_resolution(ctx.prior_full, ref, mov)

    found = _fit_searched(ctx, config, ref, mov, img_ref, kp_mask_ref, img_mov, kp_mask_mov,
                          feat_ref, feat_mov, prior_work, xcfg, final)  # fmt: skip
    matches, feat_mov, tie, fit, feat_ref = found.best.payload
    return _Estimate(
        ref, mov, img_ref, img_mov, feat_ref, feat_mov, matches, np.asarray(fit.inliers), tie,
        fit, verification=found.best.verification, search=found,
    )  # fmt: skip


def _fit_searched(ctx: _Context, config: RegisterConfig, ref, mov, img_ref, kpm_ref, img_mov,
                  kpm_mov, feat_ref, feat_mov, prior_work, xcfg, final: bool):  # fmt: skip
    """Match, fit and verify the moving features as they are (with the georeferencing prior
    when given); when that is weak (:func:`sarreg.search.is_weak`) retry without the prior and
    over the hypotheses of :mod:`sarreg.search` (moving image rotated, flipped, scaled).
    Returns the :class:`sarreg.search.SearchResult`; its ``best.payload`` is
    ``(matches, moving features in moving work px, tie points, fit)``. Raises the first
    attempt's error when no attempt gave a fit, and :class:`DegenerateTransformError` (exit 8)
    when a mirrored hypothesis wins without ``config.allow_reflection``."""
    from sarreg import geometry, search, verify
    from sarreg.errors import DegenerateTransformError
    from sarreg.features import extract

    timer = ctx.timer
    what = None if final else "coarse "
    ref_levels: dict[float, Features] = {1.0: feat_ref}

    def reference_features(shrink: float) -> Features:
        """Reference features of the reference shrunk by ``shrink``, keypoints in work px."""
        if shrink not in ref_levels:
            import cv2

            h, w = img_ref.shape
            size = (max(16, round(w / shrink)), max(16, round(h / shrink)))
            small = cv2.resize(img_ref, size, interpolation=cv2.INTER_AREA)
            msk = cv2.resize(kpm_ref.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
            with timer.stage("extract"):
                f = extract(ctx.loaded.net, small, msk, replace(xcfg, progress=False,
                                                                refine_radius=0))  # fmt: skip
            sx, sy = w / size[0], h / size[1]
            kp = (f.keypoints + 0.5) * np.array([sx, sy], np.float32) - 0.5
            ref_levels[shrink] = replace(f, keypoints=kp.astype(np.float32),
                                         image_shape=tuple(img_ref.shape))  # fmt: skip
        return ref_levels[shrink]

    def try_one(hyp, use_prior: bool, feats: Features | None = None):
        att = search.Attempt(hyp, use_prior)
        try:
            f_ref = reference_features(hyp.ref_shrink)
            if feats is None:
                img_h, msk_h, h_mat = hyp.apply(img_mov, kpm_mov)
                with timer.stage("extract"):
                    feats = extract(ctx.loaded.net, img_h, msk_h, replace(xcfg, progress=False))
            else:
                h_mat = np.eye(3)
            h_inv = np.linalg.inv(h_mat)
            prior_h = None
            if use_prior and prior_work is not None:

                def prior_h(xy):  # noqa: E306 - resampled moving px -> reference px
                    return prior_work(geometry.apply_matrix(h_inv, xy))

            att.stage = "match"
            with timer.stage("match"):
                matches = _match(f_ref, feats, config, prior_h)
                feats = refine_keypoints(f_ref, feats, matches)
            att.stage = "fit"
            kp = geometry.apply_matrix(h_inv, feats.keypoints.astype(np.float64))
            feats = replace(feats, keypoints=kp.astype(np.float32),
                            image_shape=tuple(img_mov.shape))  # fmt: skip
            with timer.stage("estimate"):
                tie = _TiePoints.from_matches(ref, mov, f_ref, feats, matches)
                # fit in the hypothesis' frame (G x_mov), then compose: M = M_fit @ G
                g = np.eye(3)
                if not hyp.is_identity and config.transform in geometry.MODELS:
                    g = hyp.linear()
                tie_g = replace(tie, xy_mov=geometry.apply_matrix(g, tie.xy_mov))
                fit = _fit(tie_g, config, config.ransac_threshold * ref.decimation * hyp.ref_shrink,
                           ctx.mov_info.shape, what, check=False)  # fmt: skip
                fit = replace(fit, matrix=fit.matrix @ g)
            att.n_inliers, att.inlier_share = int(fit.n_inliers), fit.n_inliers / len(tie)
            with timer.stage("verify"):
                att.verification = verify.verify_fit(
                    ref, mov, img_ref, img_mov, fit.matrix, mapping=fit.mapping
                )
            try:
                _check_fit(fit, config, ctx.mov_info.shape, config.allow_reflection or hyp.flip)
            except DegenerateTransformError:
                # a verified but implausible fit (e.g. outside --scale range) ends the search
                att.final = att.passed
                raise
            att.payload = (matches, feats, tie, fit, f_ref)
        except (TooFewMatchesError, DegenerateTransformError) as err:
            att.error = err
        return att

    used_prior = prior_work is not None
    first = try_one(search.Hypothesis(), used_prior, feat_mov)
    # too few matches at all: a strict --min-similarity or unrelated images, not orientation
    if not config.search or not search.is_weak(first) or first.stage == "match":
        found = search.SearchResult(first, [first])
    else:
        log.info("the plain fit is weak or fails its check; searching orientation and scale")
        ratio = math.sqrt(img_mov.size / max(img_ref.size, 1))
        todo = [(search.Hypothesis(), False)] if used_prior else []
        todo += [
            (h, False)
            for h in search.hypotheses(
                flips=True, size_ratio=ratio, flips_first=config.allow_reflection
            )
        ]
        found = search.run_search(todo, try_one, first)
    best = found.best
    final = [a for a in found.tried if a.final]
    if final:
        raise final[0].error
    if best.payload is None:
        raise first.error if first.error is not None else best.error
    if best.hypothesis.flip and not config.allow_reflection and best.passed:
        raise DegenerateTransformError(
            "the moving image is mirrored relative to the reference",
            "pass --allow-reflection to register mirrored images (e.g. ascending against "
            "descending passes)",
        )
    if best.payload is not first.payload:
        log.info("search: %s won", best.hypothesis.describe())
    return found


def _fit(tie: _TiePoints, config: RegisterConfig, threshold: float, mov_shape, what=None,
         initial_inliers=None, allow_reflection=None, check=True):  # fmt: skip
    """Fit ``config.transform`` robustly on the tie points and check it: the number of inliers
    (``config.min_inliers``) and plausibility (unless not ``check``: see :func:`_check_fit`).
    ``what``: prefix of error messages."""
    from sarreg import geometry
    from sarreg.mapping import NONLINEAR_MODELS, fit_mapping

    model = config.transform
    if model in NONLINEAR_MODELS:
        fit = fit_mapping(
            tie.xy_mov, tie.xy_ref, model, threshold=threshold, seed=config.seed,
            initial_inliers=initial_inliers,
        )  # fmt: skip
        need = config.min_inliers
    else:
        fit = geometry.fit_transform(
            tie.xy_mov, tie.xy_ref, model=model, threshold=threshold, seed=config.seed
        )
        need = max(config.min_inliers, geometry.min_inliers(model))
    if fit.n_inliers < need:
        raise TooFewMatchesError(
            f"only {fit.n_inliers} of {len(tie)} {what or ''}matches agree on a {model} "
            f"transform (need >= {need})",
            "check that the images show the same area; try --transform similarity, "
            "--no-prior, or a larger --search-radius",
        )
    if check:
        _check_fit(fit, config, mov_shape, allow_reflection)
    return fit


def _check_fit(fit, config: RegisterConfig, mov_shape, allow_reflection=None) -> None:
    """:func:`sarreg.geometry.check_plausible` of a fit (DegenerateTransformError, exit 8)."""
    from sarreg import geometry

    model = config.transform
    geometry.check_plausible(
        fit.matrix,
        model if model in geometry.MODELS else "affine",
        scale_range=config.scale_range,
        shape=mov_shape,
        allow_reflection=config.allow_reflection if allow_reflection is None else allow_reflection,
    )


def _estimate_tiled(ctx: _Context) -> _Estimate:
    """Large-scene path: coarse pass on decimated reads, then full-resolution tiles over the
    overlap matched with the coarse transform as prior, then the global fit on all tiles'
    RANSAC inliers. Only one tile pair is held in memory at a time."""
    from sarreg import geometry, scene
    from sarreg.errors import NoOverlapError

    config, timer = ctx.config, ctx.timer
    # coarse pass and tiles: the configured model where it is linear and at most affine
    local_model = (
        config.transform if config.transform in ("translation", "similarity") else "affine"
    )
    coarse_size = min(config.max_size, config.coarse_size)
    ccfg = replace(config, max_size=coarse_size, transform=local_model)
    coarse = _estimate_in_memory(ctx, ccfg, final=False)
    m0 = coarse.fit.matrix
    log.info(
        "coarse pass (decimation %.3g / %.3g): %d inliers, rmse %.2f px",
        coarse.ref.decimation, coarse.mov.decimation, coarse.fit.n_inliers, coarse.fit.rmse,
    )  # fmt: skip

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
        scale = _prior_scale(lambda xy: geometry.apply_matrix(m0, xy), ctx.mov_info.shape)
        # reference finer: read it at the moving pixel size (and vice versa)
        dec_ref = _snap_decimation(scale) if scale > 1.25 else 1.0
        dec_mov = _snap_decimation(1.0 / scale) if scale < 0.8 else 1.0
        size = int(round(config.tile_size * dec_ref))  # tile_size pixels at work resolution
        if dec_ref == int(dec_ref):  # whole bins of the decimated read
            size -= size % (2 * int(dec_ref))
        windows = scene.plan_tiles(overlap, ctx.ref_info.shape, config.tiles, size)
    parts: list[_TiePoints] = []
    tiles: list[dict] = []
    for k, win in enumerate(windows):
        rec, part = _register_tile(ctx, k, win, m0, coarse, dec_ref, dec_mov, local_model)
        tiles.append(rec)
        if part is not None:
            parts.append(part)
    used = [t for t in tiles if t["status"] == "used"]
    log.info("%d of %d tiles gave tie points", len(used), len(tiles))
    if not parts:
        reasons = sorted({t.get("reason", "") for t in tiles})
        if tiles and all("nodata" in r for r in reasons):
            raise EmptyImageError(
                f"every tile over the overlap of {ctx.ref_path} and {ctx.mov_path} is mostly "
                "nodata",
                "check the nodata values, or lower the window size to use the in-memory path",
            )
        raise TooFewMatchesError(
            f"none of the {len(tiles)} tiles over the overlap gave enough matches "
            f"({'; '.join(r for r in reasons if r)})",
            "try more or larger --tiles, a larger tile search radius, or --window-size 0",
        )
    tie = _TiePoints.concat(parts)
    with timer.stage("estimate"):
        fit = _fit(tie, config, config.ransac_threshold * dec_ref, ctx.mov_info.shape,
                   initial_inliers=np.ones(len(tie), dtype=bool))  # fmt: skip
        _add_tile_residuals(tiles, tie, fit)
    coarse_info = {
        "decimation_ref": float(coarse.ref.decimation),
        "decimation_mov": float(coarse.mov.decimation),
        "model": coarse.fit.model,
        "matches": int(len(coarse.matches)),
        "inliers": int(coarse.fit.n_inliers),
        "rmse_px": float(coarse.fit.rmse),
        "pixel_matrix": m0.tolist(),
        "tiles_planned": len(windows),
        "tiles_used": len(used),
    }
    return replace(coarse, tie=tie, fit=fit, tiles=tiles, coarse=coarse_info)


def _register_tile(ctx: _Context, k: int, win, m0, coarse: _Estimate, dec_ref, dec_mov,
                   tile_model: str):  # fmt: skip
    """Read, extract, match and RANSAC-fit one tile. Returns (report record, tie points of
    the tile's inliers or None when it is skipped)."""
    from sarreg import geometry, io, preprocess, scene
    from sarreg.features import extract
    from sarreg.mapping import thin_points

    config, timer = ctx.config, ctx.timer
    rec: dict = {
        "index": k,
        "ref_window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
        "status": "skipped",
    }
    margin = config.tile_search_radius + 8.0
    multiple = 2 * int(dec_mov) if dec_mov == int(dec_mov) else 2
    mwin = scene.moving_window(m0, win, ctx.mov_info.shape, margin, multiple)
    if mwin is None:
        rec["reason"] = "outside the moving image"
        return rec, None
    rec["mov_window"] = [int(mwin.col_off), int(mwin.row_off), int(mwin.width), int(mwin.height)]

    def side(w, d):
        return None if d <= 1.0 else max(16, int(round(max(w.width, w.height) / d)))

    try:
        with timer.stage("read"):
            ref = io.read_raster(ctx.ref_path, band=config.band_ref, kind=coarse.ref.kind,
                                 window=win, max_size=side(win, dec_ref))  # fmt: skip
            mov = io.read_raster(ctx.mov_path, band=config.band_mov, kind=coarse.mov.kind,
                                 window=mwin, max_size=side(mwin, dec_mov))  # fmt: skip
    except EmptyImageError:
        rec["reason"] = "nodata"
        return rec, None
    rec["valid_fraction"] = [float(ref.mask.mean()), float(mov.mask.mean())]
    if ref.mask.mean() < config.tile_min_valid or mov.mask.mean() < config.tile_min_valid / 2:
        rec["reason"] = "mostly nodata"
        return rec, None
    try:
        with timer.stage("preprocess"):
            img_r, kpm_r = preprocess.preprocess(ref.data, ref.mask, ref.kind, ctx.pre_cfg)
            img_m, kpm_m = preprocess.preprocess(mov.data, mov.mask, mov.kind, ctx.pre_cfg)
    except EmptyImageError:
        rec["reason"] = "featureless (constant)"
        return rec, None
    if not kpm_r.any() or not kpm_m.any() or float(img_r[kpm_r].std()) < TILE_MIN_CONTRAST:
        rec["reason"] = "featureless (no contrast)"
        return rec, None
    with timer.stage("extract"):
        xcfg = config.extract
        if xcfg.scales is None:
            xcfg = replace(xcfg, scales=tuple(config.tile_scales))
        xcfg = replace(xcfg, progress=False, top_k=min(xcfg.top_k, config.tile_top_k))
        f_ref = extract(ctx.loaded.net, img_r, kpm_r, replace(xcfg, refine_radius=0))
        f_mov = extract(ctx.loaded.net, img_m, kpm_m, xcfg)
    rec["keypoints"] = [len(f_ref), len(f_mov)]
    if len(f_ref) < 8 or len(f_mov) < 8:
        rec["reason"] = "featureless"
        return rec, None

    def prior(xy_mov_work: np.ndarray) -> np.ndarray:
        return ref.from_full_res(geometry.apply_matrix(m0, mov.to_full_res(xy_mov_work)))

    tcfg = replace(config, transform=tile_model,
                   search_radius=config.tile_search_radius / ref.decimation)  # fmt: skip
    try:
        with timer.stage("match"):
            matches = _match(f_ref, f_mov, tcfg, prior, fallback=False)
            f_mov = refine_keypoints(f_ref, f_mov, matches)
        rec["matches"] = len(matches)
        with timer.stage("estimate"):
            tie = _TiePoints.from_matches(ref, mov, f_ref, f_mov, matches, tile=k)
            threshold = config.ransac_threshold * ref.decimation
            fit = geometry.fit_transform(
                tie.xy_mov, tie.xy_ref, model=tile_model, threshold=threshold, seed=config.seed
            )
    except SarregError as err:  # too few matches / inliers in this tile
        rec["reason"] = f"too few matches ({err.message})"
        return rec, None
    if fit.n_inliers < max(config.min_inliers, geometry.min_inliers(tile_model)):
        rec["reason"] = f"too few inliers ({fit.n_inliers})"
        return rec, None
    inl = np.flatnonzero(fit.inliers)
    keep = inl[thin_points(tie.xy_ref[inl], -tie.similarity[inl], config.tile_max_points)]
    rec.update(status="used", tile_inliers=int(fit.n_inliers), tile_rmse_px=float(fit.rmse),
               tie_points=int(len(keep)))  # fmt: skip
    return rec, tie.subset(keep)


def _snap_decimation(d: float) -> float:
    """``d`` rounded to an integer when within 10 % of one.

    A decimated read averages whole-pixel bins (GDAL); a factor just below an integer (1.99)
    would bin whole pixels anyway and drift by up to a pixel from the nominal grid."""
    r = round(d)
    return float(r) if abs(d - r) < 0.1 * d else float(d)


def _residual_summary(res: np.ndarray, inl: np.ndarray) -> dict:
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


def _add_tile_residuals(tiles: list[dict], tie: _TiePoints, fit) -> None:
    """Add the global fit's residuals of each used tile's tie points to its record."""
    res = np.asarray(fit.residuals)
    inl = np.asarray(fit.inliers, dtype=bool)
    for rec in tiles:
        sel = tie.tile == rec["index"]
        if sel.any():
            rec["residuals"] = _residual_summary(res[sel], inl[sel])


def _region_stats(shape, n: int, xy_ref: np.ndarray, fit) -> list[dict]:
    """Residuals of the fit per region of an ``n x n`` grid over the reference image."""
    from sarreg import scene

    res = np.asarray(fit.residuals)
    inl = np.asarray(fit.inliers, dtype=bool)
    out = []
    for k, win in enumerate(scene.region_grid(shape, n)):
        x, y = xy_ref[:, 0], xy_ref[:, 1]
        sel = (
            (x >= win.col_off - 0.5) & (x < win.col_off + win.width - 0.5)
            & (y >= win.row_off - 0.5) & (y < win.row_off + win.height - 0.5)
        )  # fmt: skip
        out.append(
            {
                "index": k,
                "ref_window": [
                    int(win.col_off),
                    int(win.row_off),
                    int(win.width),
                    int(win.height),
                ],  # fmt: skip
                "status": "region",
                "residuals": _residual_summary(res[sel], inl[sel]),
            }
        )
    return out


def _gcp_indices(fit, xy_mov: np.ndarray, config: RegisterConfig) -> np.ndarray | None:
    """Indices of the tie points written as GCPs into a ``--mode georef`` output (inliers; for
    the non-linear models thinned to ``config.max_gcps`` spread over the moving image), or None
    when the output gets a geotransform instead (translation/similarity/affine)."""
    from sarreg.mapping import thin_points

    if config.mode != "georef" or config.transform in ("translation", "similarity", "affine"):
        return None
    inl = np.flatnonzero(np.asarray(fit.inliers, dtype=bool))
    if fit.mapping is None:  # homography: every inlier, as always
        return inl
    res = np.asarray(fit.residuals)[inl]
    return inl[thin_points(xy_mov[inl], res, config.max_gcps)]


def _prior_scale(prior_full, mov_shape) -> float:
    """Reference pixels per moving pixel, from the georeferencing prior (full resolution)."""
    h, w = mov_shape
    cx, cy = w / 2.0, h / 2.0
    pts = np.array([[cx, cy], [cx + 10.0, cy], [cx, cy + 10.0]])
    q = prior_full(pts)
    jac = np.stack([(q[1] - q[0]) / 10.0, (q[2] - q[0]) / 10.0], axis=1)
    return float(math.sqrt(abs(np.linalg.det(jac))))


def _prior_at_work_resolution(prior_full, ref, mov):
    """Compose array->full-res (moving), the georeferencing prior, and full-res->array (ref)."""

    def prior(xy_mov_work: np.ndarray) -> np.ndarray:
        return ref.from_full_res(prior_full(mov.to_full_res(xy_mov_work)))

    return prior


def _match(
    feat_ref: Features, feat_mov: Features, config: RegisterConfig, prior, fallback: bool = True
) -> Matches:
    """Mutual nearest neighbours, with the georeferencing prior when given.

    When the prior gives too few matches (georeferencing off by more than the search radius),
    fall back to unconstrained matching (unless ``fallback`` is False: then too few matches
    raise :class:`TooFewMatchesError`).
    """
    from sarreg.geometry import MODELS, min_inliers
    from sarreg.mapping import MIN_POINTS
    from sarreg.matching import match_mutual

    model = config.transform
    need = min_inliers(model) if model in MODELS else MIN_POINTS[model]
    if prior is not None:
        mcfg = replace(config.match, radius=config.search_radius)
        matches = match_mutual(feat_ref, feat_mov, mcfg, prior=prior)
        if len(matches) >= max(need, 20):
            return matches
        if not fallback:
            raise TooFewMatchesError(
                f"only {len(matches)} matches within {config.search_radius:.3g} px of the "
                "predicted positions",
                "increase the search radius",
            )
        log.info(
            "only %d matches within the search radius; matching without the prior", len(matches)
        )
    matches = match_mutual(feat_ref, feat_mov, replace(config.match, radius=None))
    if len(matches) < need:
        raise TooFewMatchesError(
            f"only {len(matches)} matches between the images (need >= {need} for a "
            f"{config.transform} transform)",
            "check that the images overlap and show the same area; try --transform similarity "
            "or a lower --min-similarity",
        )
    return matches


def _write_output(out_path, mov_path, ref_info, fit, xy_ref, xy_mov, gcp_idx, config) -> str:
    from sarreg import geometry, warp

    if config.mode == "resample":
        if ref_info.transform is not None:
            grid = warp.GridSpec(
                crs=ref_info.crs,
                transform=ref_info.transform,
                width=ref_info.shape[1],
                height=ref_info.shape[0],
            )
        else:
            from affine import Affine

            grid = warp.GridSpec(
                crs=None,
                transform=Affine.identity(),
                width=ref_info.shape[1],
                height=ref_info.shape[0],
            )
        warp.resample_to_grid(
            mov_path,
            config.band_mov,
            fit.mapping if fit.mapping is not None else fit.matrix,
            grid,
            out_path,
            resampling=config.resampling,
            overwrite=config.overwrite,
            progress=config.progress,
        )
        return out_path
    # georef mode
    if gcp_idx is not None:
        XY = geometry.pixel_to_map(ref_info.transform, xy_ref[gcp_idx])
        gcps = [
            (float(a), float(b), float(c), float(d))
            for (a, b), (c, d) in zip(xy_mov[gcp_idx], XY, strict=True)
        ]
        warp.write_georeferenced(
            mov_path,
            config.band_mov,
            out_path,
            crs=ref_info.crs,
            gcps=gcps,
            overwrite=config.overwrite,
        )
    else:
        new_t = geometry.corrected_geotransform(ref_info.transform, fit.matrix)
        warp.write_georeferenced(
            mov_path,
            config.band_mov,
            out_path,
            transform=new_t,
            crs=ref_info.crs,
            overwrite=config.overwrite,
        )
    return out_path


def _build_report(
    ref: _Input,
    mov: _Input,
    out_path,
    tie: _TiePoints,
    fit,
    gcp_idx,
    loaded,
    config,
    timings,
    prior_full,
    est: _Estimate,
) -> dict:
    """The JSON report: transform, tie points, per-tile residuals, quality figures, timings,
    provenance.

    ``prior_full``: the georeferencing prior (moving -> reference full-res pixels), or None
    when either image is not georeferenced. ``gcp_idx``: tie points written as GCPs, or None.
    """
    from sarreg import geometry

    ref_info, mov_info = ref.info, mov.info
    xy_ref, xy_mov = tie.xy_ref, tie.xy_mov

    def forward(xy: np.ndarray) -> np.ndarray:
        if fit.mapping is not None:
            return fit.mapping.forward(xy)
        return geometry.apply_matrix(fit.matrix, xy)

    inl = np.asarray(fit.inliers, dtype=bool)
    is_gcp = np.zeros(len(tie), dtype=bool)
    if gcp_idx is not None:
        is_gcp[gcp_idx] = True
    tie_points = []
    XY_ref = (
        geometry.pixel_to_map(ref_info.transform, xy_ref)
        if ref_info.transform is not None
        else None
    )
    XY_mov = (
        geometry.pixel_to_map(mov_info.transform, xy_mov)
        if mov_info.transform is not None
        else None
    )
    for i in range(len(xy_ref)):
        tp = {
            "ref_px": [float(xy_ref[i, 0]), float(xy_ref[i, 1])],
            "mov_px": [float(xy_mov[i, 0]), float(xy_mov[i, 1])],
            "similarity": float(tie.similarity[i]),
            "score_ref": float(tie.score_ref[i]),
            "score_mov": float(tie.score_mov[i]),
            "inlier": bool(inl[i]),
            "residual_px": float(fit.residuals[i]),
            "tile": int(tie.tile[i]),
            "gcp": bool(is_gcp[i]),
        }
        if XY_ref is not None:
            tp["ref_map"] = [float(XY_ref[i, 0]), float(XY_ref[i, 1])]
        if XY_mov is not None:
            tp["mov_map"] = [float(XY_mov[i, 0]), float(XY_mov[i, 1])]
        tie_points.append(tp)

    scale, rotation = geometry.matrix_scale_rotation(fit.matrix)
    transform_info: dict = {
        "model": fit.model,
        "pixel_matrix": fit.matrix.tolist(),
        "pixel_matrix_convention": "moving pixel centre (x, y, 1) -> reference pixel centre, "
        "full resolution, top-left pixel centre at (0, 0)",
        "scale": scale,
        "rotation_deg": rotation,
    }
    if fit.mapping is not None:
        transform_info["pixel_matrix_note"] = (
            f"least-squares affine approximation of the {fit.model} mapping over its inliers"
        )
        transform_info["mapping"] = fit.mapping.to_dict()
    h, w = mov_info.shape
    centre = np.array([[(w - 1) / 2.0, (h - 1) / 2.0]])
    transform_info["moving_centre_to_reference_px"] = forward(centre)[0].tolist()
    if ref_info.transform is not None:
        if config.transform in ("translation", "similarity", "affine"):
            new_t = geometry.corrected_geotransform(ref_info.transform, fit.matrix)
            transform_info["corrected_geotransform"] = list(new_t)[:6]
            transform_info["corrected_geotransform_gdal"] = list(new_t.to_gdal())
        if prior_full is not None:
            predicted = prior_full(centre)[0]
            found = forward(centre)[0]
            shift_px = found - predicted
            XY = geometry.pixel_to_map(ref_info.transform, np.stack([predicted, found]))
            transform_info["georeferencing_shift_at_centre"] = {
                "ref_px": shift_px.tolist(),
                "map_units": (XY[1] - XY[0]).tolist(),
                "map_distance": float(np.hypot(*(XY[1] - XY[0]))),
            }

    settings = asdict(config)
    return {
        "sarreg_version": __version__,
        "reference": _image_entry(ref),
        "moving": _image_entry(mov),
        "output": out_path,
        "mode": config.mode,
        "transform": transform_info,
        "matches": int(len(tie)),
        "inliers": int(inl.sum()),
        "inlier_ratio": float(inl.mean()) if len(inl) else 0.0,
        "rmse_px": float(fit.rmse),
        "loo_rmse_px": float(fit.loo_rmse),
        "used_georeferencing_prior": bool(prior_full is not None and config.use_prior),
        "windowed": est.coarse is not None,
        "coarse": est.coarse,
        "tiles": est.tiles,
        "gcps_written": int(is_gcp.sum()),
        "crs": _crs_text(ref_info.crs),
        "model": {
            "path": str(getattr(loaded, "path", "")),
            "arch": loaded.arch,
            "kwargs": dict(loaded.kwargs),
            "sha256": getattr(loaded, "sha256", None),
        },
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "settings": settings,
        "tie_points": tie_points,
    }


def _crs_text(crs) -> str | None:
    """``EPSG:<code>`` or WKT of a CRS, None without one."""
    return crs.to_string() if crs is not None else None


def _image_entry(item: _Input) -> dict:
    """Report entry of one input: file, shape, band, kind, work scale, keypoints, georef."""
    info = item.info
    return {
        "path": item.path,
        "shape": list(info.shape),
        "band": item.raster.band,
        "kind": item.raster.kind,
        "work_decimation": float(item.raster.decimation),
        "keypoints": int(len(item.features)),
        "crs": _crs_text(info.crs),
        "geotransform": list(info.transform)[:6] if info.transform is not None else None,
    }


def _work_to_full(raster) -> np.ndarray:
    """3x3 matrix taking work-resolution pixel centres to full-resolution pixel centres."""
    d = float(raster.decimation)
    ox, oy = raster.window_offset
    return np.array([[d, 0.0, 0.5 * d - 0.5 + ox], [0.0, d, 0.5 * d - 0.5 + oy], [0.0, 0.0, 1.0]])


def _plot(path, est: _Estimate, fit, out_written) -> None:
    """Matches at work resolution (the coarse pass for large scenes) and a checkerboard of the
    reference with the moving image warped by ``fit.matrix`` (the affine approximation for the
    non-linear models)."""
    from sarreg.report import plot_registration

    ref, mov = est.ref, est.mov
    warped = None
    if out_written is not None:
        try:
            import cv2

            # warp the preprocessed moving image at work resolution for the overlay
            Mw = np.linalg.inv(_work_to_full(ref)) @ fit.matrix @ _work_to_full(mov)
            warped = cv2.warpPerspective(
                est.img_mov, Mw, (est.img_ref.shape[1], est.img_ref.shape[0]),
                flags=cv2.INTER_LINEAR,
            )  # fmt: skip
        except SarregError:
            warped = None
    plot_registration(
        est.img_ref,
        est.img_mov,
        warped,
        est.feat_ref.keypoints[est.matches.idx_ref],
        est.feat_mov.keypoints[est.matches.idx_mov],
        np.asarray(est.work_inliers, dtype=bool),
        path,
    )


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

    Keypoints and scales are converted to the full-resolution pixel grid of the file.
    """
    from sarreg import io, preprocess
    from sarreg.atomic import atomic_write, check_output_path
    from sarreg.features import extract

    check_output_path(str(out_path), overwrite=overwrite)
    loaded = load_model(model)
    pre_cfg = preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})
    info = io.raster_info(str(image_path), band=band)
    size = max_size if max(info.shape) > max_size else None
    raster = io.read_raster(str(image_path), band=band, kind=kind, max_size=size)
    img, kp_mask = preprocess.preprocess(raster.data, raster.mask, raster.kind, pre_cfg)
    # local descriptors are not saved: don't compute them
    feats = extract(loaded.net, img, kp_mask, replace(config or ExtractConfig(), refine_radius=0))
    feats = replace(
        feats,
        keypoints=raster.to_full_res(feats.keypoints.astype(np.float64)).astype(np.float32),
        scales=(feats.scales * raster.decimation).astype(np.float32),
        image_shape=tuple(info.shape),
    )
    with atomic_write(str(out_path), overwrite=overwrite) as tmp:
        feats.to_npz(tmp)
    return feats
