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
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sarreg.errors import ConfigError


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


GCP_SUFFIXES = (".geojson", ".json", ".csv")


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

    ``key``: dotted path in :class:`~sarreg.pipeline.RegisterConfig` (``extract.top_k``);
    ``flag``: the command-line option, or ``None`` for settings without one; ``ok``: predicate
    on a value (``None`` values are checked only when ``optional`` is False); ``valid``: the
    valid range in words, as shown to the user.
    """

    key: str
    flag: str | None
    ok: Callable[[Any], bool]
    valid: str
    optional: bool = False

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


#: every checked setting of RegisterConfig and its ExtractConfig / MatchConfig, in CLI order
# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("transform", "--transform", _one_of(Transform.values()), _choices(Transform)),
    Rule("mode", "--mode", _one_of(Mode.values()), _choices(Mode)),
    Rule("resampling", "--resampling", _one_of(Resampling.values()), _choices(Resampling)),
    Rule("band_ref", "--band-ref", _int_in(1), "a band number >= 1"),
    Rule("band_mov", "--band-mov", _int_in(1), "a band number >= 1"),
    Rule("kind_ref", "--kind-ref", _one_of(Kind.values()), _choices(Kind)),
    Rule("kind_mov", "--kind-mov", _one_of(Kind.values()), _choices(Kind)),
    Rule("max_size", "--max-size", _int_in(64), "an integer >= 64 (pixels)"),
    Rule("extract.top_k", "--top-k", _int_in(1), "an integer >= 1"),
    Rule("extract.scales", "--scales", _scales, "scales in (0, 4], e.g. 1,0.71,0.5", True),
    Rule("match.min_similarity", "--min-similarity", _num(-1, 1), "a number in [-1, 1]"),
    Rule("match.ratio", "--ratio", _num(0, 1, lo_open=True), "a number in (0, 1]", True),
    Rule("search_radius", "--search-radius", _num(0, lo_open=True), "a number > 0 (pixels)"),
    Rule("ransac_threshold", "--ransac-threshold", _num(0, lo_open=True),
         "a number > 0 (pixels)"),
    Rule("min_inliers", "--min-inliers", _int_in(0), "an integer >= 0"),
    Rule("seed", "--seed", _int_in(0, 2**31 - 1), "an integer in 0..2147483647"),
    Rule("window_size", "--window-size", _int_in(0), "an integer >= 0 (deprecated)", True),
    Rule("tiles", "--tiles", _int_in(1, 32), "an integer in 1..32", True),
    Rule("tile_size", "--tile-size", _int_in(128, 8192), "an integer in 128..8192 (pixels)",
         True),
    Rule("coarse_size", "--coarse-size", _int_in(256, 8192), "an integer in 256..8192 (pixels)"),
    Rule("gcps", "--gcps", _gcp_path, f"a file named {' or '.join('*' + s for s in GCP_SUFFIXES)}",
         True),
    Rule("max_gcps", None, _int_in(3), "an integer >= 3"),
    Rule("scale_range", None, _scale_range, "two numbers 0 < low < high"),
    Rule("georef_scales", None, _scales, "scales in (0, 4]", True),
    Rule("tile_scales", None, _scales, "scales in (0, 4]", True),
    Rule("tile_search_radius", None, _num(0, lo_open=True), "a number > 0 (pixels)"),
    Rule("tile_min_valid", None, _num(0, 1), "a number in [0, 1]"),
    Rule("tile_max_points", None, _int_in(1), "an integer >= 1"),
    Rule("tile_top_k", None, _int_in(1), "an integer >= 1"),
    Rule("extract.refine_radius", None, _int_in(0, 16), "an integer in 0..16"),
    Rule("extract.context_scale", None, _num(0, 1, True, True), "a number in (0, 1)", True),
    Rule("extract.context_weight", None, _num(0, lo_open=True), "a number > 0"),
    Rule("extract.border", None, _int_in(0), "an integer >= 0"),
    Rule("extract.tile_overlap", None, _int_in(0), "an integer >= 0"),
    Rule("match.local_radius", None, _int_in(0, 16), "an integer in 0..16"),
    Rule("match.candidates", None, _int_in(1), "an integer >= 1"),
    Rule("match.chunk", None, _int_in(1), "an integer >= 1"),
)
# fmt: on
RULES_BY_KEY: dict[str, Rule] = {r.key: r for r in RULES}


def check_value(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` is not valid for the setting ``key``."""
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
        raise ConfigError(f"{rule.name} {shown!s} is out of range", f"use {rule.valid}")


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
    """Check every setting of a ``RegisterConfig`` (and its extract / match settings) against
    :data:`RULES`; raises :class:`ConfigError` for the first bad one."""
    check_values(dict(_flatten(config)))
