"""Registration settings: the choices, the table of transform models, and the validation of
every option in one place.

Nothing here imports torch, OpenCV or rasterio: the CLI validates its options with this module
before it loads a model or reads a pixel. Every bad value raises
:class:`~sarreg.errors.ConfigError` (exit code 12) with a one-line message that names the option
(its command-line flag where it has one) and its valid range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from sarreg.errors import BandError, ConfigError


class Choice(str, Enum):
    """Base of the choice options: a ``str`` enum whose values are the CLI spellings."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class Transform(Choice):
    """Transform model fitted to the tie points (see :data:`TRANSFORM_MODELS`)."""

    translation = "translation"
    similarity = "similarity"
    affine = "affine"
    homography = "homography"
    poly2 = "poly2"
    poly3 = "poly3"
    tps = "tps"


class Mode(Choice):
    """What the output holds: the moving image resampled onto the reference grid, or its own
    pixels with a corrected geotransform / GCPs."""

    resample = "resample"
    georef = "georef"


class Resampling(Choice):
    bilinear = "bilinear"
    nearest = "nearest"
    cubic = "cubic"


class Kind(Choice):
    """What the pixel values are (``auto``: detected from dtype, tags and values)."""

    auto = "auto"
    power = "power"
    amplitude = "amplitude"
    db = "db"
    display = "display"


GCP_SUFFIXES = (".geojson", ".json", ".gpkg", ".csv")


# ------------------------------------------------------------------------- per-stage settings


@dataclass
class InputConfig:
    """How both images are read (stage ``inputs`` and the coarse pass's reads).

    Attributes:
        band_ref, band_mov: 1-based bands of the reference and the moving image.
        kind_ref, kind_mov: what the pixel values are, one of :class:`Kind`.
        max_size: largest side of the coarse pass's reads, together with ``coarse_size`` (the
            smaller of the two applies).
        coarse_size: larger side of the decimated reads of the coarse pass (smaller images are
            read as they are).
    """

    band_ref: int = 1
    band_mov: int = 1
    kind_ref: str = "auto"
    kind_mov: str = "auto"
    max_size: int = 4096
    coarse_size: int = 1024

    @property
    def coarse_read_size(self) -> int:
        """Larger side of the coarse pass's reads."""
        return int(min(self.coarse_size, self.max_size))


@dataclass(frozen=True)
class ExtractConfig:
    """Keypoint extraction settings.

    Attributes:
        scale_factor: ratio between successive pyramid scales (> 1).
        min_scale, max_scale: pyramid scales run from ``max_scale`` down to ``min_scale``.
        min_size, max_size: pyramid levels whose larger side (level pixels) is outside
            ``[min_size, max_size]`` are skipped (when none is left, the level closest to the
            range is kept).
        scales: explicit scales; overrides the pyramid and its size limits.
        rep_threshold: minimum repeatability of a keypoint (0 = rank by score alone).
        rel_threshold: minimum reliability of a keypoint (0 = rank by score alone). The
            scale of both maps depends on the model, so by default keypoints are selected by
            ``top_k`` on the score alone; raise these to drop weak points in flat areas.
        top_k: keypoints kept over all scales, by their ranking score (``rank``).
        peaks: map whose 3x3 local maxima are the candidate keypoints: 'repeatability' (the
            R2D2 detector), 'reliability' or 'score' (reliability x repeatability).
        rank: score that ranks the candidates: 'reliability' (how well the descriptor is
            expected to match; the default, which gives more correct matches on speckled
            data) or 'score' (reliability x repeatability, as in R2D2).
        refine_radius: keep, for every keypoint, the descriptors at the integer offsets of
            the ``(2 r + 1)^2`` square of level pixels around it (``Features.local_descriptors``),
            which :func:`sarreg.matching.refine_keypoints` uses to move a matched keypoint
            to where its descriptor best matches the other image's; 0 = keep none. Memory:
            ``top_k * (2 r + 1)^2 * dim * 2`` bytes (float16).
        context_scale: each keypoint's descriptor is extended by a context descriptor, the
            descriptor at the same place of its pyramid level resized by ``context_scale``
            (0.5: twice the footprint), which tells apart structures that look alike under
            speckle at the keypoint's own scale; ``None`` = point descriptors only.
        context_weight: weight ``w`` of the context: the similarity of two extended
            descriptors is ``(s_point + w s_context) / (1 + w)``.
        border: keypoints closer than ``border`` level pixels to the level's edge are dropped.
        tile_size: tile side in level pixels (memory ~ ``(4 + 4 dim / 4) * tile_size^2`` bytes).
        tile_overlap: context added on every side of a tile's core, level pixels; at least the
            network's receptive-field radius + 1 (28 px for Fast-R2D2) for tiling-independent
            results. Rounded up to an even number (pooling alignment).
        device: torch device the network runs on (the network is moved there).
        progress: show a tqdm progress bar (only when stderr is a terminal).
    """

    scale_factor: float = 2**0.5
    min_scale: float = 0.5
    max_scale: float = 1.0
    min_size: int = 256
    max_size: int = 4096
    scales: tuple[float, ...] | None = None
    rep_threshold: float = 0.0
    rel_threshold: float = 0.0
    top_k: int = 5000
    peaks: str = "repeatability"
    rank: str = "reliability"
    refine_radius: int = 3
    context_scale: float | None = 0.5
    context_weight: float = 0.5
    border: int = 8
    tile_size: int = 1024
    tile_overlap: int = 64
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.scale_factor <= 1.0:
            raise ValueError("scale_factor must be > 1")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError("need 0 < min_scale <= max_scale")
        if self.scales is not None and (
            len(self.scales) == 0 or any(not s > 0 for s in self.scales)
        ):
            raise ValueError("scales must be a non-empty tuple of positive numbers")
        if self.peaks not in ("repeatability", "reliability", "score"):
            raise ValueError("peaks must be 'repeatability', 'reliability' or 'score'")
        if self.rank not in ("reliability", "score"):
            raise ValueError("rank must be 'reliability' or 'score'")
        if int(self.refine_radius) != self.refine_radius or not 0 <= self.refine_radius <= 16:
            raise ValueError("refine_radius must be an integer in 0..16")
        if self.context_scale is not None and not 0.0 < self.context_scale < 1.0:
            raise ValueError("context_scale must be in (0, 1) or None")
        if not self.context_weight > 0.0:
            raise ValueError("context_weight must be positive")
        if self.top_k < 1 or self.border < 0 or self.tile_overlap < 0:
            raise ValueError("top_k must be >= 1, border and tile_overlap >= 0")
        if self.tile_size <= 2 * (self.tile_overlap + self.tile_overlap % 2) + 2:
            raise ValueError("tile_size must exceed twice the tile_overlap")


@dataclass(frozen=True)
class MatchConfig:
    """Matching settings.

    Attributes:
        min_similarity: minimum cosine similarity of a match; a loose default that drops
            only clearly unrelated pairs (mutual nearest neighbours and RANSAC do most of the
            filtering); -1 disables the test.
        ratio: Lowe's ratio test on descriptor distances, best / second best < ``ratio``
            (in both directions), e.g. 0.9; ``None`` disables it.
        radius: with a prior, only pairs whose reference keypoint lies within ``radius``
            reference pixels of the prior's prediction are considered; ``None`` = no limit.
        chunk: block size of the similarity computation (memory about 4 * chunk^2 bytes, 30 *
            chunk^2 with a prior: the distance test of each block).
        local_radius: when the moving Features carry local descriptors
            (``ExtractConfig.refine_radius``), a pair's similarity is the best similarity of
            the reference descriptor to the moving descriptors within ``local_radius`` level
            pixels of the moving keypoint (Chebyshev), so that keypoints detected a pixel or
            two apart on the same structure still match at full strength; 0 = the keypoints'
            own descriptors only.
        candidates: with ``local_radius``, the pairs scored that way are each moving
            keypoint's ``candidates`` most similar references by their own descriptors.
    """

    min_similarity: float = 0.5
    ratio: float | None = None
    radius: float | None = None
    chunk: int = 1024
    local_radius: int = 2
    candidates: int = 16

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError("min_similarity must be in [-1, 1]")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ValueError("ratio must be in (0, 1]")
        if self.radius is not None and not self.radius > 0:
            raise ValueError("radius must be positive")
        if self.chunk < 1:
            raise ValueError("chunk must be positive")
        if int(self.local_radius) != self.local_radius or self.local_radius < 0:
            raise ValueError("local_radius must be a non-negative integer")
        if self.candidates < 1:
            raise ValueError("candidates must be positive")


@dataclass
class EstimateConfig:
    """How the transform is estimated from the matches (stages ``coarse`` and ``tiles``) and
    checked.

    Attributes:
        transform: one of :class:`Transform` (see :data:`TRANSFORM_MODELS`).
        use_prior: use the georeferencing of both images to restrict matches to
            ``search_radius`` reference pixels (at coarse resolution) of the predicted position.
        search_radius: see ``use_prior``.
        ransac_threshold: inlier threshold in reference pixels at work resolution.
        scale_range: plausible scale of the transform (reference px per moving px).
        min_inliers: fewest RANSAC inliers accepted (at least the model's own minimum);
            fewer means the images could not be registered reliably.
        georef_scales: pyramid of the coarse pass when both images are georeferenced (they
            are then read at about the same pixel size, so little scale search is needed)
            and ``extract.scales`` is not set (see :func:`pyramid_plan`).
        georef_max_level: the first level of that pyramid holds at most
            ``georef_max_level`` squared pixels of the larger coarse read (a 1024 x 256
            read fits): a larger read runs only the first level, scaled down by steps of
            ``sqrt(2)`` until it fits (a 1024 x 1024 read runs at 724 x 724 pixels, a third
            of the network's work of ``georef_scales`` at full size). Such a read has
            keypoints enough on one level, and the coarse transform's precision comes from
            what follows it: the tie points' refinement by local correlation on the coarse
            reads, or the full-resolution tiles. ``None`` = ``georef_scales`` as given.
        seed: RANSAC seed.
        verify: refuse a result that fails the independent check of :mod:`sarreg.verify`
            (exit 7); False (``--no-verify``): report the check only.
        allow_reflection: mirrored images may be registered (the search includes the flip);
            False: a mirrored pair is refused (exit 8).
        search: when the plain fit is weak or fails the check, retry without the
            georeferencing prior and over rotations (Fourier-Mellin proposals, then 45 deg
            steps), flips and scales (:mod:`sarreg.search`).
        refine_tie_points: images with no full-resolution tiles: move each tie point onto
            the local phase-correlation peak of the reference and the moving image mapped by
            the fit (sub-pixel, :func:`sarreg.estimate.refine_by_correlation`), then refit.
        weighted_fit: the final fit of images with no tiles weighted by tie-point quality:
            the correlation of each refined point with ``refine_tie_points``, else the match
            similarity (a homography's least squares takes no weights).
    """

    transform: str = "affine"
    use_prior: bool = True
    search_radius: float = 64.0
    ransac_threshold: float = 3.0
    scale_range: tuple[float, float] = (0.1, 10.0)
    min_inliers: int = 10
    georef_scales: tuple[float, ...] = (1.0, 2**-0.5)
    georef_max_level: int | None = 768
    seed: int = 0
    verify: bool = True
    allow_reflection: bool = False
    search: bool = True
    refine_tie_points: bool = True
    weighted_fit: bool = True


@dataclass
class TilingConfig:
    """The full-resolution tiles over the overlap (stage ``tiles``, images larger than the
    coarse read).

    Attributes:
        tiles: tile grid per side; ``None`` = chosen from the overlap and the transform
            model (:func:`sarreg.scene.tile_grid`). Also the grid of the per-region residuals
            reported when there are no tiles (4 when ``None``).
        size: tile side in pixels at tile resolution (reference pixels, or moving pixels
            when the reference is finer and read decimated to them); ``None`` = chosen with
            the grid (384 at most).
        search_radius: prior search radius in full-resolution reference pixels around the
            coarse transform's prediction.
        scales: pyramid of the tiles (the coarse pass put both images at the same pixel
            size) unless ``extract.scales`` is set.
        min_valid: tiles (and their moving windows) with a smaller fraction of valid pixels
            are skipped as mostly nodata.
        max_points: at most this many RANSAC inliers kept per tile (spread over it) for the
            global fit.
        top_k: keypoints kept per tile and image (unless ``extract.top_k`` is smaller).
        coarse_top_k: keypoints kept per image by the coarse pass when tiles refine it
            (unless ``extract.top_k`` is smaller): that pass only gives the tiles their
            prior (and the search its verdicts). ``None``: ``extract.top_k``. 2000 instead
            of 5000 gave the same transforms on the scaling benchmark's 2048 and 4096 px
            pairs, 0.4 s sooner.
        coarse_max_level: the first level of that coarse pass (georeferenced images) holds
            at most ``coarse_max_level`` squared pixels of the larger coarse read, as
            ``estimate.georef_max_level`` does for a coarse pass that is the result (the
            smaller of the two applies). ``None``: ``estimate.georef_max_level``. 512 instead
            of 768 (a 1024 px read runs at 512 instead of 724 px) gave the same transforms
            within 0.001 px on the scaling benchmark's 2048 and 4096 px pairs, 0.4 s sooner:
            the tiles' precision does not depend on it.
        window_size: deprecated, no effect (every registration is coarse to fine); a value
            other than ``None`` logs a warning.
    """

    tiles: int | None = None
    size: int | None = None
    search_radius: float = 24.0
    scales: tuple[float, ...] = (1.0,)
    min_valid: float = 0.5
    max_points: int = 400
    top_k: int = 2000
    coarse_top_k: int | None = 2000
    coarse_max_level: int | None = 512
    window_size: int | None = None


@dataclass
class OutputConfig:
    """What is written (stage ``output``) and where.

    Attributes:
        mode: one of :class:`Mode`: 'resample' (moving image resampled onto the reference
            grid) or 'georef' (moving pixels unchanged, corrected geotransform, or GCPs for a
            homography and the non-linear models).
        resampling: one of :class:`Resampling` (mode 'resample').
        overwrite: replace existing outputs.
        report: path of the JSON report; ``None`` = next to the output (``OUT.json``).
        plot: path of a PNG with the matches and a checkerboard overlay, or ``None``.
        gcps: path of a tie-point export, ``.geojson`` or ``.gpkg`` (points in the reference
            CRS) or ``.csv``; ``None`` = none.
        max_gcps: at most this many inlier tie points (spread over the image) are written as
            GCPs into ``--mode georef`` outputs of the non-linear models (a homography's
            output gets all its inliers).
        cog: write the output image as a Cloud-Optimized GeoTIFF (internal overviews).
        shifts: path of a GeoTIFF of the (dx, dy) the model applies on a coarse grid of the
            reference (:mod:`sarreg.gis`); ``None`` = none. With ``plot``, a tie-point quality
            map is written next to it as ``<plot>_quality.png``.
    """

    mode: str = "resample"
    resampling: str = "bilinear"
    overwrite: bool = False
    report: str | None = None
    plot: str | None = None
    gcps: str | None = None
    max_gcps: int = 2000
    cog: bool = False
    shifts: str | None = None


@dataclass
class RegisterConfig:
    """Settings of one registration, one group per stage. Defaults are what
    ``sarreg register`` uses.

    Every registration runs the same stages (see :mod:`sarreg.pipeline`): a **coarse pass**
    on both images read decimated to at most ``input.coarse_read_size`` pixels (smaller
    images as they are) and, when an image is larger than that read, **full-resolution
    tiles** over the overlap, matched with the coarse transform as prior, and one global fit
    on all tiles' tie points. Small images are the case with no tiles.

    Build one with the groups that differ from the defaults, e.g.
    ``RegisterConfig(estimate=EstimateConfig(transform="similarity"))``, or with dotted
    names: ``with_values(RegisterConfig(), {"estimate.transform": "similarity"})``.

    Attributes:
        model: checkpoint path; ``None`` = the model bundled with sarreg.
        input: :class:`InputConfig` (bands, value kinds, read sizes).
        extract: :class:`ExtractConfig` (keypoints and descriptors).
        match: :class:`MatchConfig` (descriptor matching).
        estimate: :class:`EstimateConfig` (transform model, prior, RANSAC, checks).
        tiling: :class:`TilingConfig` (full-resolution tiles).
        output: :class:`OutputConfig` (output image, report, tie points, plots).
        progress: show progress bars.
    """

    model: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    progress: bool = False


def with_values(config: Any, values: Mapping[str, Any]) -> Any:
    """A copy of ``config`` (a settings dataclass) with the settings named by dotted keys
    (``"estimate.transform"``, ``"model"``) set to the given values; the values are not
    checked (see :func:`validate_config`). Raises :class:`ConfigError` for an unknown name."""
    own: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            groups.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    names = {f.name for f in fields(config)}
    for head in (*own, *groups):
        if head not in names:
            raise ConfigError(
                f"unknown setting {head!r} of {type(config).__name__}",
                f"use one of {', '.join(sorted(names))}",
            )
    for head, sub in groups.items():
        own[head] = with_values(getattr(config, head), sub)
    return replace(config, **own)


def get_value(config: Any, key: str) -> Any:
    """The setting named by the dotted ``key`` of ``config``."""
    for part in key.split("."):
        config = getattr(config, part)
    return config


@dataclass(frozen=True)
class PyramidPlan:
    """The pyramid scales of each pass, decided once per registration (and reported).

    ``None`` for a pass = the pyramid of :class:`~sarreg.features.ExtractConfig`
    (``max_scale`` down to ``min_scale`` by ``scale_factor``, within its size limits).
    """

    coarse: tuple[float, ...] | None
    tiles: tuple[float, ...] | None
    rule: str
    #: the coarse pass's scales when full-resolution tiles follow it (it only seeds them);
    #: ``None``: :attr:`coarse`
    seed: tuple[float, ...] | None = None

    def coarse_scales(self, tiled: bool) -> tuple[float, ...] | None:
        """The coarse pass's scales: :attr:`seed` when tiles follow and it is set."""
        return self.seed if tiled and self.seed is not None else self.coarse

    def to_dict(self) -> dict:
        before = self.coarse_scales(True)
        return {
            "coarse": None if self.coarse is None else list(self.coarse),
            "coarse_before_tiles": None if before is None else list(before),
            "tiles": None if self.tiles is None else list(self.tiles),
            "rule": self.rule,
        }


def georef_coarse_scales(
    scales: tuple[float, ...], coarse_side: int | None, max_level: int | None
) -> tuple[float, ...]:
    """``scales`` unchanged when their first (largest) level of a read of ``coarse_side`` x
    ``coarse_side`` pixels (or as many) is at most ``max_level`` pixels a side (or either is
    ``None``); else only that level, times ``2 ** (-n / 2)`` for the smallest ``n`` that
    makes it fit."""
    if coarse_side is None or max_level is None or not scales:
        return tuple(scales)
    first = max(scales)
    if round(coarse_side * first) <= max_level:
        return tuple(scales)
    factor = 1.0
    while round(coarse_side * first * factor) > max_level and factor > 1e-3:
        factor *= 2**-0.5
    return (float(first * factor),)


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional caps (``None`` = no cap)."""
    return b if a is None else a if b is None else min(a, b)


def pyramid_plan(
    config: RegisterConfig, georef: bool, coarse_side: int | None = None
) -> PyramidPlan:
    """The one pyramid rule: explicit ``extract.scales`` everywhere; otherwise the coarse pass
    runs ``estimate.georef_scales`` when both images are georeferenced (read at about the same
    pixel size), or only its first level scaled to hold at most
    ``estimate.georef_max_level`` squared pixels of a larger coarse read
    (:func:`georef_coarse_scales`;
    ``coarse_side``: :func:`sarreg.inputs.coarse_read_side`, ``None``: not scaled), and the
    extractor's own pyramid when not (unknown scale); the tiles run ``tiling.scales`` (the
    coarse transform has put both at the same pixel size). A georeferenced coarse pass that
    only seeds tiles caps its level at ``tiling.coarse_max_level`` too
    (:attr:`PyramidPlan.seed`)."""
    if config.extract.scales is not None:
        s = tuple(config.extract.scales)
        return PyramidPlan(s, s, "extract.scales (explicit)")
    tiles = tuple(config.tiling.scales) if config.tiling.scales else None
    if georef and config.estimate.georef_scales:
        est = config.estimate
        scales = georef_coarse_scales(est.georef_scales, coarse_side, est.georef_max_level)
        seed_cap = _smaller(est.georef_max_level, config.tiling.coarse_max_level)
        seed = georef_coarse_scales(est.georef_scales, coarse_side, seed_cap)
        rule = "georeferenced: estimate.georef_scales, tiles tiling.scales"
        if scales != tuple(est.georef_scales):
            rule = (
                f"georeferenced: the first of estimate.georef_scales, scaled to at most "
                f"estimate.georef_max_level = {est.georef_max_level} px squared, tiles "
                "tiling.scales"
            )
        if seed != scales:
            rule += (
                f"; before tiles the first level scaled to at most tiling.coarse_max_level = "
                f"{seed_cap} px squared"
            )
        return PyramidPlan(scales, tiles, rule, seed if seed != scales else None)
    return PyramidPlan(None, tiles, "not georeferenced: extractor pyramid, tiles tiling.scales")


# --------------------------------------------------------------------------- transform models


@dataclass(frozen=True)
class TransformModel:
    """One transform model of the registration.

    Attributes:
        name: the ``--transform`` spelling.
        min_points: fewest RANSAC inliers accepted (also the fewest matches worth fitting).
        linear: a 3x3 matrix (``sarreg.geometry.fit_transform``); else a non-linear
            ``sarreg.mapping.Mapping`` (``fit_mapping``) with its affine approximation.
        geotransform: the result can be written as a corrected geotransform (``--mode
            georef`` writes GCPs for the others).
        local: the model fitted in the coarse pass and in each tile (a linear model, at most
            affine): local pieces of the global fit.
    """

    name: str
    min_points: int
    linear: bool
    geotransform: bool
    local: str

    def fit(self, xy_mov, xy_ref, threshold: float, seed: int, initial_inliers=None):
        """Robust fit moving -> reference pixel centres (``(N, 2)`` each) ->
        ``TransformFit``."""
        if self.linear:
            from sarreg.geometry import fit_transform

            return fit_transform(xy_mov, xy_ref, model=self.name, threshold=threshold, seed=seed)
        from sarreg.mapping import fit_mapping

        return fit_mapping(
            xy_mov, xy_ref, self.name, threshold=threshold, seed=seed,
            initial_inliers=initial_inliers,
        )  # fmt: skip

    @property
    def plausibility_model(self) -> str:
        """The linear model whose plausibility checks apply (``geometry.check_plausible``)."""
        return self.name if self.linear else "affine"


#: every transform model by name (minimum points as in sarreg.geometry / sarreg.mapping)
TRANSFORM_MODELS: dict[str, TransformModel] = {
    m.name: m
    for m in (
        TransformModel("translation", 3, True, True, "translation"),
        TransformModel("similarity", 4, True, True, "similarity"),
        TransformModel("affine", 6, True, True, "affine"),
        TransformModel("homography", 8, True, False, "affine"),
        TransformModel("poly2", 12, False, False, "affine"),
        TransformModel("poly3", 20, False, False, "affine"),
        TransformModel("tps", 12, False, False, "affine"),
    )
}


def transform_model(name: str) -> TransformModel:
    """The :class:`TransformModel` called ``name`` (ConfigError for an unknown one)."""
    try:
        return TRANSFORM_MODELS[name]
    except KeyError:
        raise ConfigError(
            f"--transform {name!r} is not a transform model",
            f"choose one of {', '.join(TRANSFORM_MODELS)}",
        ) from None


# ------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Rule:
    """The valid values of one setting.

    ``key``: dotted path in :class:`RegisterConfig` (``extract.top_k``);
    ``flag``: the command-line option, or ``None`` for settings without one; ``ok``: predicate
    on a value (``None`` values are checked only when ``optional`` is False); ``valid``: the
    valid range in words, as shown to the user.
    """

    key: str
    flag: str | None
    ok: Callable[[Any], bool]
    valid: str
    optional: bool = False
    error: type = ConfigError  # raised for a bad value (a band out of range: exit 4)

    @property
    def name(self) -> str:
        return self.flag or f"setting {self.key}"


def _int_in(lo: float, hi: float = math.inf) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and float(v).is_integer()
            and lo <= v <= hi
        )

    return ok


def _num(lo: float = -math.inf, hi: float = math.inf, lo_open=False, hi_open=False):
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return ok


def _one_of(values: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: (v.value if isinstance(v, Enum) else v) in values


def _scales(v: Any) -> bool:
    try:
        vals = tuple(float(s) for s in v)
    except (TypeError, ValueError):
        return False
    return bool(vals) and all(math.isfinite(s) and 0.0 < s <= 4.0 for s in vals)


def _scale_range(v: Any) -> bool:
    try:
        lo, hi = (float(s) for s in v)
    except (TypeError, ValueError):
        return False
    return 0.0 < lo < hi < math.inf


def _gcp_path(v: Any) -> bool:
    return Path(str(v)).suffix.lower() in GCP_SUFFIXES


def _choices(cls: type[Choice]) -> str:
    return f"one of {', '.join(cls.values())}"


#: every checked setting of RegisterConfig by its dotted name, those with a CLI flag first
# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("estimate.transform", "--transform", _one_of(Transform.values()), _choices(Transform)),
    Rule("output.mode", "--mode", _one_of(Mode.values()), _choices(Mode)),
    Rule("output.resampling", "--resampling", _one_of(Resampling.values()),
         _choices(Resampling)),
    Rule("input.band_ref", "--band-ref", _int_in(1), "a band number >= 1", error=BandError),
    Rule("input.band_mov", "--band-mov", _int_in(1), "a band number >= 1", error=BandError),
    Rule("input.kind_ref", "--kind-ref", _one_of(Kind.values()), _choices(Kind)),
    Rule("input.kind_mov", "--kind-mov", _one_of(Kind.values()), _choices(Kind)),
    Rule("input.max_size", "--max-size", _int_in(64), "an integer >= 64 (pixels)"),
    Rule("extract.top_k", "--top-k", _int_in(1), "an integer >= 1"),
    Rule("extract.scales", "--scales", _scales, "scales in (0, 4], e.g. 1,0.71,0.5", True),
    Rule("match.min_similarity", "--min-similarity", _num(-1, 1), "a number in [-1, 1]"),
    Rule("match.ratio", "--ratio", _num(0, 1, lo_open=True), "a number in (0, 1]", True),
    Rule("estimate.search_radius", "--search-radius", _num(0, lo_open=True),
         "a number > 0 (pixels)"),
    Rule("estimate.ransac_threshold", "--ransac-threshold", _num(0, lo_open=True),
         "a number > 0 (pixels)"),
    Rule("estimate.min_inliers", "--min-inliers", _int_in(0), "an integer >= 0"),
    Rule("estimate.seed", "--seed", _int_in(0, 2**31 - 1), "an integer in 0..2147483647"),
    Rule("tiling.window_size", "--window-size", _int_in(0), "an integer >= 0 (deprecated)", True),
    Rule("tiling.tiles", "--tiles", _int_in(1, 32), "an integer in 1..32", True),
    Rule("tiling.size", "--tile-size", _int_in(128, 8192), "an integer in 128..8192 (pixels)",
         True),
    Rule("input.coarse_size", "--coarse-size", _int_in(256, 8192),
         "an integer in 256..8192 (pixels)"),
    Rule("output.gcps", "--gcps", _gcp_path,
         f"a file named {' or '.join('*' + s for s in GCP_SUFFIXES)}", True),
    Rule("output.max_gcps", None, _int_in(3), "an integer >= 3"),
    Rule("estimate.scale_range", None, _scale_range, "two numbers 0 < low < high"),
    Rule("estimate.georef_scales", None, _scales, "scales in (0, 4]", True),
    Rule("estimate.georef_max_level", None, _int_in(64, 8192), "an integer in 64..8192 (pixels)",
         True),
    Rule("tiling.scales", None, _scales, "scales in (0, 4]", True),
    Rule("tiling.search_radius", None, _num(0, lo_open=True), "a number > 0 (pixels)"),
    Rule("tiling.min_valid", None, _num(0, 1), "a number in [0, 1]"),
    Rule("tiling.max_points", None, _int_in(1), "an integer >= 1"),
    Rule("tiling.top_k", None, _int_in(1), "an integer >= 1"),
    Rule("tiling.coarse_top_k", None, _int_in(1), "an integer >= 1", True),
    Rule("tiling.coarse_max_level", None, _int_in(64, 8192), "an integer in 64..8192 (pixels)",
         True),
    Rule("extract.refine_radius", None, _int_in(0, 16), "an integer in 0..16"),
    Rule("extract.context_scale", None, _num(0, 1, True, True), "a number in (0, 1)", True),
    Rule("extract.context_weight", None, _num(0, lo_open=True), "a number > 0"),
    Rule("extract.border", None, _int_in(0), "an integer >= 0"),
    Rule("extract.tile_overlap", None, _int_in(0), "an integer >= 0"),
    Rule("match.local_radius", None, _int_in(0, 16), "an integer in 0..16"),
    Rule("match.candidates", None, _int_in(1), "an integer >= 1"),
    Rule("match.chunk", None, _int_in(1), "an integer >= 1"),
    Rule("estimate.refine_tie_points", None, lambda v: isinstance(v, bool), "true or false"),
    Rule("estimate.weighted_fit", None, lambda v: isinstance(v, bool), "true or false"),
)
# fmt: on
RULES_BY_KEY: dict[str, Rule] = {r.key: r for r in RULES}


def check_value(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` (:class:`BandError` for a band) when ``value`` is not valid
    for the setting ``key``."""
    rule = RULES_BY_KEY[key]
    if value is None and rule.optional:
        return
    try:
        good = rule.ok(value)
    except Exception:  # a value of the wrong type: invalid, not a crash
        good = False
    if not good:
        shown = value.value if isinstance(value, Enum) else value
        if isinstance(shown, tuple | list):
            shown = ",".join(f"{s:g}" if isinstance(s, float) else str(s) for s in shown)
        raise rule.error(f"{rule.name} {shown!s} is out of range", f"use {rule.valid}")


def check_values(values: Mapping[str, Any]) -> None:
    """Check several settings (dotted keys, see :data:`RULES`); keys without a rule pass."""
    for key, value in values.items():
        if key in RULES_BY_KEY:
            check_value(key, value)


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            yield from _flatten(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def validate_config(config: Any) -> None:
    """Check every setting of a :class:`RegisterConfig` (all its stage groups) against
    :data:`RULES`; raises :class:`ConfigError` for the first bad one."""
    check_values(dict(_flatten(config)))
    from sarreg import gis

    gis.validate(config.output)
