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
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
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
from sarreg.matching import MatchConfig, Matches

log = logging.getLogger(__name__)

MODES = ("resample", "georef")
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


@dataclass
class RegistrationResult:
    """What ``register`` found and wrote.

    ``matrix`` maps full-resolution moving pixel centres to reference pixel centres (3x3).
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


def _validate(config: RegisterConfig) -> None:
    from sarreg.errors import ConfigError
    from sarreg.geometry import MODELS

    if config.transform not in MODELS:
        raise ConfigError(
            f"unknown transform {config.transform!r}", f"choose one of {', '.join(MODELS)}"
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
    ``config.report`` is set). Raises a :class:`~sarreg.errors.SarregError` subclass for every
    bad input; nothing is left half-written.
    """
    from sarreg import geometry, io, preprocess
    from sarreg.atomic import check_output_path
    from sarreg.features import extract

    config = config or RegisterConfig()
    _validate(config)
    timer = _Timer()
    ref_path, mov_path = str(ref_path), str(mov_path)

    report_path = None
    if out_path is not None:
        out_path = str(out_path)
        check_output_path(out_path, overwrite=config.overwrite)
        report_path = config.report or str(Path(out_path).with_suffix(".json"))
    elif config.report:
        report_path = config.report
    if report_path is not None:
        check_output_path(report_path, overwrite=config.overwrite)
    if config.plot:
        check_output_path(config.plot, overwrite=config.overwrite)

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
        size_ref, size_mov = _work_sizes(ref_info, mov_info, config, prior_scale)
        ref = io.read_raster(
            ref_path, band=config.band_ref, kind=config.kind_ref, max_size=size_ref
        )
        mov = io.read_raster(
            mov_path, band=config.band_mov, kind=config.kind_mov, max_size=size_mov
        )

    with timer.stage("model"):
        loaded = load_model(config.model)
        pre_cfg = preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})

    with timer.stage("preprocess"):
        img_ref, kp_mask_ref = preprocess.preprocess(ref.data, ref.mask, ref.kind, pre_cfg)
        img_mov, kp_mask_mov = preprocess.preprocess(mov.data, mov.mask, mov.kind, pre_cfg)

    with timer.stage("extract"):
        xcfg = config.extract
        if georef and xcfg.scales is None and config.georef_scales:
            xcfg = replace(xcfg, scales=tuple(config.georef_scales))
        feat_ref = extract(loaded.net, img_ref, kp_mask_ref, xcfg)
        feat_mov = extract(loaded.net, img_mov, kp_mask_mov, xcfg)
    for name, path, feat in (("reference", ref_path, feat_ref), ("moving", mov_path, feat_mov)):
        if len(feat) < 8:
            raise EmptyImageError(
                f"the {name} image {path} gave only {len(feat)} keypoints (featureless?)",
                "check --band and that the image holds radar backscatter with structure",
            )

    # Prior at work resolution: moving work px -> reference work px.
    prior_work = None
    if georef and config.use_prior:
        prior_work = _prior_at_work_resolution(prior_full, ref, mov)

    with timer.stage("match"):
        matches = _match(feat_ref, feat_mov, config, prior_work)

    with timer.stage("estimate"):
        xy_ref = ref.to_full_res(feat_ref.keypoints[matches.idx_ref].astype(np.float64))
        xy_mov = mov.to_full_res(feat_mov.keypoints[matches.idx_mov].astype(np.float64))
        threshold = config.ransac_threshold * ref.decimation
        fit = geometry.fit_transform(
            xy_mov, xy_ref, model=config.transform, threshold=threshold, seed=config.seed
        )
        need = max(config.min_inliers, geometry.min_inliers(config.transform))
        if fit.n_inliers < need:
            raise TooFewMatchesError(
                f"only {fit.n_inliers} of {len(matches)} matches agree on a {config.transform} "
                f"transform (need >= {need})",
                "check that the images show the same area; try --transform similarity, "
                "--no-prior, or a larger --search-radius",
            )
        geometry.check_plausible(
            fit.matrix, config.transform, scale_range=config.scale_range, shape=mov_info.shape
        )

    out_written = None
    if out_path is not None:
        with timer.stage("write"):
            out_written = _write_output(
                out_path, ref_path, mov_path, ref_info, mov_info, fit, xy_ref, xy_mov, config
            )

    timer.times["total"] = sum(timer.times.values())
    report = _build_report(
        _Input(ref_path, ref_info, ref, feat_ref),
        _Input(mov_path, mov_info, mov, feat_mov),
        out_written, matches, fit, xy_ref, xy_mov, loaded, config, timer.times, prior_full,
    )  # fmt: skip
    if report_path is not None:
        from sarreg.report import write_report

        write_report(report, report_path)
    if config.plot:
        _plot(
            config.plot, img_ref, img_mov, ref, mov, feat_ref, feat_mov, matches, fit, out_written
        )

    return RegistrationResult(
        matrix=fit.matrix,
        model=fit.model,
        n_matches=len(matches),
        n_inliers=int(fit.n_inliers),
        rmse=float(fit.rmse),
        loo_rmse=float(fit.loo_rmse),
        output=out_written,
        report_path=report_path,
        report=report,
        timings=dict(timer.times),
    )


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


def _match(feat_ref: Features, feat_mov: Features, config: RegisterConfig, prior) -> Matches:
    """Mutual nearest neighbours, with the georeferencing prior when given.

    When the prior gives too few matches (georeferencing off by more than the search radius),
    fall back to unconstrained matching.
    """
    from sarreg.geometry import min_inliers
    from sarreg.matching import match_mutual

    need = min_inliers(config.transform)
    if prior is not None:
        mcfg = replace(config.match, radius=config.search_radius)
        matches = match_mutual(
            feat_ref.descriptors,
            feat_mov.descriptors,
            mcfg,
            xy_ref=feat_ref.keypoints,
            xy_mov=feat_mov.keypoints,
            prior=prior,
        )
        if len(matches) >= max(need, 20):
            return matches
        log.info(
            "only %d matches within the search radius; matching without the prior", len(matches)
        )
    matches = match_mutual(
        feat_ref.descriptors, feat_mov.descriptors, replace(config.match, radius=None)
    )
    if len(matches) < need:
        raise TooFewMatchesError(
            f"only {len(matches)} matches between the images (need >= {need} for a "
            f"{config.transform} transform)",
            "check that the images overlap and show the same area; try --transform similarity "
            "or a lower --min-similarity",
        )
    return matches


def _write_output(
    out_path, ref_path, mov_path, ref_info, mov_info, fit, xy_ref, xy_mov, config
) -> str:
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
            fit.matrix,
            grid,
            out_path,
            resampling=config.resampling,
            overwrite=config.overwrite,
            progress=config.progress,
        )
        return out_path
    # georef mode
    if config.transform == "homography":
        inl = fit.inliers
        XY = geometry.pixel_to_map(ref_info.transform, xy_ref[inl])
        gcps = [
            (float(a), float(b), float(c), float(d))
            for (a, b), (c, d) in zip(xy_mov[inl], XY, strict=True)
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
    matches,
    fit,
    xy_ref,
    xy_mov,
    loaded,
    config,
    timings,
    prior_full,
) -> dict:
    """The JSON report: transform, tie points, quality figures, timings, provenance.

    ``prior_full``: the georeferencing prior (moving -> reference full-res pixels), or None
    when either image is not georeferenced.
    """
    from sarreg import geometry

    ref_info, mov_info = ref.info, mov.info

    inl = np.asarray(fit.inliers, dtype=bool)
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
            "similarity": float(matches.similarity[i]),
            "inlier": bool(inl[i]),
            "residual_px": float(fit.residuals[i]),
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
    h, w = mov_info.shape
    centre = np.array([[(w - 1) / 2.0, (h - 1) / 2.0]])
    transform_info["moving_centre_to_reference_px"] = geometry.apply_matrix(fit.matrix, centre)[
        0
    ].tolist()
    if ref_info.transform is not None:
        if config.transform != "homography":
            new_t = geometry.corrected_geotransform(ref_info.transform, fit.matrix)
            transform_info["corrected_geotransform"] = list(new_t)[:6]
            transform_info["corrected_geotransform_gdal"] = list(new_t.to_gdal())
        if prior_full is not None:
            predicted = prior_full(centre)[0]
            found = geometry.apply_matrix(fit.matrix, centre)[0]
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
        "matches": int(len(matches)),
        "inliers": int(inl.sum()),
        "inlier_ratio": float(inl.mean()) if len(inl) else 0.0,
        "rmse_px": float(fit.rmse),
        "loo_rmse_px": float(fit.loo_rmse),
        "used_georeferencing_prior": bool(prior_full is not None and config.use_prior),
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
        "crs": info.crs.to_string() if info.crs is not None else None,
        "geotransform": list(info.transform)[:6] if info.transform is not None else None,
    }


def _work_to_full(raster) -> np.ndarray:
    """3x3 matrix taking work-resolution pixel centres to full-resolution pixel centres."""
    d = float(raster.decimation)
    ox, oy = raster.window_offset
    return np.array([[d, 0.0, 0.5 * d - 0.5 + ox], [0.0, d, 0.5 * d - 0.5 + oy], [0.0, 0.0, 1.0]])


def _plot(path, img_ref, img_mov, ref, mov, feat_ref, feat_mov, matches, fit, out_written) -> None:
    from sarreg.report import plot_registration

    warped = None
    if out_written is not None:
        try:
            import cv2

            # warp the preprocessed moving image at work resolution for the overlay
            Mw = np.linalg.inv(_work_to_full(ref)) @ fit.matrix @ _work_to_full(mov)
            warped = cv2.warpPerspective(
                img_mov, Mw, (img_ref.shape[1], img_ref.shape[0]), flags=cv2.INTER_LINEAR
            )
        except SarregError:
            warped = None
    plot_registration(
        img_ref,
        img_mov,
        warped,
        feat_ref.keypoints[matches.idx_ref],
        feat_mov.keypoints[matches.idx_mov],
        np.asarray(fit.inliers, dtype=bool),
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
    feats = extract(loaded.net, img, kp_mask, config or ExtractConfig())
    feats = replace(
        feats,
        keypoints=raster.to_full_res(feats.keypoints.astype(np.float64)).astype(np.float32),
        scales=(feats.scales * raster.decimation).astype(np.float32),
        image_shape=tuple(info.shape),
    )
    with atomic_write(str(out_path), overwrite=overwrite) as tmp:
        feats.to_npz(tmp)
    return feats
