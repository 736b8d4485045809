"""The registration options of ``sarreg register`` and ``sarreg batch``, each defined once.

:data:`OPTIONS` is the table: an option's flags, help, the commands that have it and the
setting of :class:`~sarreg.config.RegisterConfig` it sets (a dotted name; its default is the
option's default, read from the config). :func:`with_options` adds the table's options of a
command to that command's function; :func:`config_from_options` turns the parsed values into
the config, checked against :data:`sarreg.config.RULES` (ConfigError, exit 12) before any
config object is built. Nothing here imports torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from sarreg.config import (
    Choice,
    Kind,
    Mode,
    RegisterConfig,
    Resampling,
    Transform,
    check_values,
    get_value,
    with_values,
)
from sarreg.errors import ConfigError

REGISTER, BATCH = "register", "batch"
BOTH = frozenset({REGISTER, BATCH})


def _path_str(value: Path | None) -> str | None:
    return None if value is None else str(value)


def _negate(value: bool) -> bool:
    return not value


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """``"1,0.71,0.5"`` -> ``(1.0, 0.71, 0.5)``; None or empty -> None (ConfigError for text
    that is not a list of numbers)."""
    if not text:
        return None
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise ConfigError(
            f"--scales {text!r} is not a list of numbers", "use e.g. --scales 1,0.71,0.5"
        ) from err


def _context(on: bool) -> float | None:
    return RegisterConfig().extract.context_scale if on else None


def _choices(cls: type[Choice]) -> str:
    return " | ".join(cls.values())


@dataclass(frozen=True)
class Option:
    """One command-line option.

    Attributes:
        name: the parameter name the command receives the value under.
        decls: flags, e.g. ``("--transform", "-t")`` or ``("--context/--no-context",)``.
        help: the ``--help`` text.
        fields: the dotted :class:`~sarreg.config.RegisterConfig` settings the value sets
            (after ``to_config``); empty for options the command handles itself.
        type: the annotation typer parses the value as (``bool``: a flag).
        default: the value when the option is not given; ``None`` here with ``fields`` = the
            config's default of the first field (through ``from_config``).
        to_config: option value -> setting value (e.g. a path to ``str``, ``--no-prior`` to
            ``use_prior=False``).
        from_config: setting value -> option value, for the default (the inverse of
            ``to_config``).
        commands: the commands that have the option.
    """

    name: str
    decls: tuple[str, ...]
    help: str
    fields: tuple[str, ...] = ()
    type: Any = str
    default: Any = None
    to_config: Callable[[Any], Any] | None = None
    from_config: Callable[[Any], Any] | None = None
    commands: frozenset[str] = BOTH

    @property
    def flag(self) -> str:
        """The option's first flag (``--no-context`` for ``--context/--no-context`` is the
        second spelling)."""
        return self.decls[0].split("/")[0]

    def default_value(self) -> Any:
        if self.default is not None or not self.fields:
            return self.default
        value = get_value(RegisterConfig(), self.fields[0])
        return self.from_config(value) if self.from_config else value

    def setting(self, value: Any) -> Any:
        """The config value of the option value ``value``."""
        return self.to_config(value) if self.to_config else value

    def parameter(self) -> inspect.Parameter:
        """The keyword parameter typer builds the option from."""
        default = self.default_value()
        option = typer.Option(default, *self.decls, help=self.help)
        annotation = self.type if default is not None or self.type is bool else self.type | None
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
        )


# fmt: off
#: every registration option, in ``--help`` order
OPTIONS: tuple[Option, ...] = (
    Option("model", ("--model", "-m"),
           "Checkpoint (sarreg or naver format); default: bundled model.",
           ("model",), Path, to_config=_path_str),
    Option("transform", ("--transform", "-t"),
           f"{_choices(Transform)}: the linear models, then the non-linear ones (fitted on the "
           "tie points; resampled with that model, or GCPs with --mode georef).",
           ("estimate.transform",)),
    Option("mode", ("--mode",), f"{_choices(Mode)}.", ("output.mode",)),
    Option("resampling", ("--resampling",), f"{_choices(Resampling)}.",
           ("output.resampling",)),
    Option("band_ref", ("--band-ref",), "Band of the reference (1-based).",
           ("input.band_ref",), int),
    Option("band_mov", ("--band-mov",), "Band of the moving image (1-based).",
           ("input.band_mov",), int),
    Option("kind_ref", ("--kind-ref",), f"Reference values: {_choices(Kind)}.",
           ("input.kind_ref",)),
    Option("kind_mov", ("--kind-mov",), f"Moving values: {_choices(Kind)}.",
           ("input.kind_mov",)),
    Option("max_size", ("--max-size",),
           "Work on decimated reads when an image's side is larger.", ("input.max_size",), int),
    Option("top_k", ("--top-k",), "Keypoints kept per image.", ("extract.top_k",), int),
    Option("scales", ("--scales",), "Comma-separated pyramid scales, e.g. '1,0.71,0.5'.",
           ("extract.scales",), to_config=parse_scales,
           from_config=lambda s: None if s is None else ",".join(f"{v:g}" for v in s)),
    Option("context", ("--context/--no-context",),
           "Extend each keypoint's descriptor by that of its surroundings at half resolution "
           "(more right matches under speckle; --no-context for the network's descriptors "
           "alone).", ("extract.context_scale",), bool, to_config=_context,
           from_config=lambda s: s is not None),
    Option("min_similarity", ("--min-similarity",),
           "Minimum descriptor cosine similarity of a match.", ("match.min_similarity",), float),
    Option("ratio", ("--ratio",), "Ratio test threshold (e.g. 0.9).", ("match.ratio",), float),
    Option("no_prior", ("--no-prior",), "Do not use the georeferencing to guide matching.",
           ("estimate.use_prior",), bool, to_config=_negate, from_config=_negate),
    Option("search_radius", ("--search-radius",),
           "Prior search radius in reference pixels (work scale).",
           ("estimate.search_radius",), float),
    Option("ransac_threshold", ("--ransac-threshold",),
           "RANSAC inlier threshold in reference pixels.", ("estimate.ransac_threshold",), float),
    Option("min_inliers", ("--min-inliers",),
           "Fewest RANSAC inliers accepted as a registration.", ("estimate.min_inliers",), int),
    Option("report", ("--report",), "JSON report path (default: OUTPUT with .json).",
           ("output.report",), Path, to_config=_path_str, commands=frozenset({REGISTER})),
    Option("plot", ("--plot",), "PNG with the matches and a checkerboard overlay.",
           ("output.plot",), Path, to_config=_path_str, commands=frozenset({REGISTER})),
    Option("overwrite", ("--overwrite",), "Replace existing outputs.", ("output.overwrite",),
           bool, commands=frozenset({REGISTER})),
    Option("progress", ("--progress/--no-progress",), "Progress bars.",
           ("progress", "extract.progress"), bool, default=True,
           commands=frozenset({REGISTER})),
    Option("seed", ("--seed",), "RANSAC seed.", ("estimate.seed",), int),
    Option("window_size", ("--window-size",),
           "Deprecated, no effect: every registration is coarse to fine (coarse pass, then "
           "full-resolution tiles over the overlap when an image is larger than "
           "--coarse-size).", ("tiling.window_size",), int),
    Option("coarse_size", ("--coarse-size",),
           "Largest side (pixels) of the coarse pass's reads; larger images are then refined "
           "on full-resolution tiles.", ("input.coarse_size",), int),
    Option("tiles", ("--tiles",), "Tile grid per side (default: chosen from the overlap).",
           ("tiling.tiles",), int),
    Option("tile_size", ("--tile-size",),
           "Tile side in pixels (default: chosen from the overlap, <= 512).",
           ("tiling.size",), int),
    Option("gcps", ("--gcps",),
           "Export the tie points: PATH.geojson or PATH.gpkg (GeoPackage layer; reference "
           "CRS) or PATH.csv.", ("output.gcps",), Path, to_config=_path_str,
           commands=frozenset({REGISTER})),
    Option("cog", ("--cog",), "Write the output as a Cloud-Optimized GeoTIFF (overviews).",
           ("output.cog",), bool),
    Option("shifts", ("--shifts",),
           "GeoTIFF of the (dx, dy) the model applies, on a coarse grid.", ("output.shifts",),
           Path, to_config=_path_str, commands=frozenset({REGISTER})),
    Option("no_verify", ("--no-verify",),
           "Do not refuse a result that fails the independent image check (still reported).",
           ("estimate.verify",), bool, to_config=_negate, from_config=_negate),
    Option("allow_reflection", ("--allow-reflection",),
           "Register mirrored images (e.g. ascending against descending passes).",
           ("estimate.allow_reflection",), bool),
)
# fmt: on


def options_of(command: str) -> tuple[Option, ...]:
    """The table's options of ``command`` (``"register"`` or ``"batch"``), in order."""
    return tuple(o for o in OPTIONS if command in o.commands)


def with_options(command: str) -> Callable[[Callable], Callable]:
    """Decorator: the function's own parameters (its arguments and command-specific options)
    followed by the table's options of ``command``, which the function receives in
    ``**options``; typer builds the command from this signature."""

    def decorate(func: Callable) -> Callable:
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        table = [o.parameter() for o in options_of(command)]
        func.__signature__ = inspect.Signature(own + table)
        return func

    return decorate


def settings_from_options(command: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted settings of ``command``'s table options in ``values`` (parameter name -> option
    value), checked against :data:`sarreg.config.RULES` (ConfigError, exit 12; BandError for
    a band)."""
    settings: dict[str, Any] = {}
    for opt in options_of(command):
        if opt.name in values and opt.fields:
            value = opt.setting(values[opt.name])
            settings.update(dict.fromkeys(opt.fields, value))
    check_values(settings)
    return settings


def config_from_options(
    command: str, values: Mapping[str, Any], inputs: tuple[Path, Path] | None = None
) -> RegisterConfig:
    """The :class:`~sarreg.config.RegisterConfig` of ``command``'s table options in
    ``values`` (parameter name -> value; options not given keep the config's defaults).
    Every value is checked first; with ``inputs`` (reference, moving), both inputs' metadata
    and bands are checked too, all before the network library is imported."""
    config = with_values(RegisterConfig(), settings_from_options(command, values))
    if inputs is not None:
        check_inputs(*inputs, config.input.band_ref, config.input.band_mov)
    return config


def check_inputs(reference, moving, band_ref: int, band_mov: int) -> None:
    """Open both inputs' metadata (missing file, not a raster, bad band: one-line error)
    before the network library is imported."""
    from sarreg import io

    io.raster_info(str(reference), band=band_ref)
    io.raster_info(str(moving), band=band_mov)
