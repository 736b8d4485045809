"""``sarreg register`` and ``sarreg extract``."""

from __future__ import annotations

from pathlib import Path

import typer

REGISTER_HELP = """Register MOVING onto REFERENCE and write the aligned image plus a JSON report.

By default the moving image is resampled onto the reference grid (same CRS, transform and
size). With --mode georef its pixels are kept and the corrected geotransform (or, for a
homography and the non-linear poly2/poly3/tps, the tie points as GCPs) is written instead.

Examples:

  sarreg register ref.tif moving.tif -o aligned.tif

  sarreg register ref.tif moving.tif -o moving_fixed.tif --mode georef --plot matches.png

  sarreg register s1_20240123.tif s1_20240204.tif -o out.tif --transform similarity --band-mov 2

  sarreg register big_ref.tif big_scene.tif -o out.tif --tiles 6 --transform poly2 --gcps tp.csv

Every registration is coarse to fine: a coarse pass on reads decimated to --coarse-size
pixels; images larger than that are then refined on full-resolution tiles over the overlap
(how many and how large is chosen from the overlap; --tiles and --tile-size override).
"""

EXTRACT_HELP = (
    "Extract keypoints and descriptors from IMAGE into an .npz file.\n\n"
    "The file holds `keypoints` (N x 3: x, y, scale in full-resolution pixels, pixel centres, "
    "top-left pixel centre at 0,0), `descriptors` (N x 256 with the context, N x 128 without; "
    "unit norm) and `scores` (N).\n\n"
    "The image is normalized and the pyramid chosen as the model records: a checkpoint "
    "imported from the R2D2 authors' format takes the 8-bit display image and runs their "
    "multi-scale extraction (scale factor 2^0.25, levels of 256..1024 px, ranked by "
    "reliability x repeatability, no context) unless --scales, --top-k or --context say "
    "otherwise.\n\n"
    "Example:\n\n"
    "  sarreg extract scene.tif -o scene_features.npz --top-k 8000\n"
)


def attach(app: typer.Typer) -> None:
    app.command("register", help=REGISTER_HELP, no_args_is_help=True)(register_cmd)
    app.command("extract", help=EXTRACT_HELP, no_args_is_help=True)(extract_cmd)


def register_cmd(
    reference: Path = typer.Argument(..., help="Reference (fixed) image, any GDAL raster."),
    moving: Path = typer.Argument(..., help="Moving image, registered onto the reference."),
    output: Path = typer.Option(..., "--output", "-o", help="Output GeoTIFF."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Checkpoint (sarreg or naver format); default: bundled model."
    ),
    transform: str = typer.Option(
        "affine",
        "--transform",
        "-t",
        help="translation | similarity | affine | homography, or the non-linear poly2 | poly3 "
        "| tps (fitted on the tie points; resampled with that model, or GCPs with --mode georef).",
    ),
    mode: str = typer.Option("resample", "--mode", help="resample | georef."),
    resampling: str = typer.Option("bilinear", "--resampling", help="bilinear | nearest | cubic."),
    band_ref: int = typer.Option(1, "--band-ref", help="Band of the reference (1-based)."),
    band_mov: int = typer.Option(1, "--band-mov", help="Band of the moving image (1-based)."),
    kind_ref: str = typer.Option(
        "auto", "--kind-ref", help="Reference values: auto | power | amplitude | db | display."
    ),
    kind_mov: str = typer.Option(
        "auto", "--kind-mov", help="Moving values: auto | power | amplitude | db | display."
    ),
    max_size: int = typer.Option(
        4096, "--max-size", help="Work on decimated reads when an image's side is larger."
    ),
    top_k: int | None = typer.Option(None, "--top-k", help="Keypoints kept per image."),
    scales: str | None = typer.Option(
        None, "--scales", help="Comma-separated pyramid scales, e.g. '1,0.71,0.5'."
    ),
    context: bool = typer.Option(
        True,
        "--context/--no-context",
        help="Extend each keypoint's descriptor by that of its surroundings at half resolution "
        "(more right matches under speckle; --no-context for the network's descriptors alone).",
    ),
    min_similarity: float | None = typer.Option(
        None, "--min-similarity", help="Minimum descriptor cosine similarity of a match."
    ),
    ratio: float | None = typer.Option(None, "--ratio", help="Ratio test threshold (e.g. 0.9)."),
    no_prior: bool = typer.Option(
        False, "--no-prior", help="Do not use the georeferencing to guide matching."
    ),
    search_radius: float = typer.Option(
        64.0, "--search-radius", help="Prior search radius in reference pixels (work scale)."
    ),
    ransac_threshold: float = typer.Option(
        3.0, "--ransac-threshold", help="RANSAC inlier threshold in reference pixels."
    ),
    min_inliers: int = typer.Option(
        10, "--min-inliers", help="Fewest RANSAC inliers accepted as a registration."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="JSON report path (default: OUTPUT with .json)."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="PNG with the matches and a checkerboard overlay."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    seed: int = typer.Option(0, "--seed", help="RANSAC seed."),
    window_size: int | None = typer.Option(
        None,
        "--window-size",
        help="Deprecated, no effect: every registration is coarse to fine (coarse pass, then "
        "full-resolution tiles over the overlap when an image is larger than --coarse-size).",
    ),
    coarse_size: int = typer.Option(
        1024,
        "--coarse-size",
        help="Largest side (pixels) of the coarse pass's reads; larger images are then refined "
        "on full-resolution tiles.",
    ),
    tiles: int | None = typer.Option(
        None, "--tiles", help="Tile grid per side (default: chosen from the overlap)."
    ),
    tile_size: int | None = typer.Option(
        None, "--tile-size", help="Tile side in pixels (default: chosen from the overlap, <= 512)."
    ),
    gcps: Path | None = typer.Option(
        None,
        "--gcps",
        help="Export the tie points: PATH.geojson or PATH.gpkg (GeoPackage layer; reference "
        "CRS) or PATH.csv.",
    ),
    cog: bool = typer.Option(
        False, "--cog", help="Write the output as a Cloud-Optimized GeoTIFF (overviews)."
    ),
    shifts: Path | None = typer.Option(
        None, "--shifts", help="GeoTIFF of the (dx, dy) the model applies, on a coarse grid."
    ),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Do not refuse a result that fails the independent image check (still reported).",
    ),
    allow_reflection: bool = typer.Option(
        False,
        "--allow-reflection",
        help="Register mirrored images (e.g. ascending against descending passes).",
    ),
) -> None:
    config = config_from_options(
        model=model, transform=transform, mode=mode, resampling=resampling, band_ref=band_ref,
        band_mov=band_mov, kind_ref=kind_ref, kind_mov=kind_mov, max_size=max_size, top_k=top_k,
        scales=scales, context=context, min_similarity=min_similarity, ratio=ratio,
        no_prior=no_prior, search_radius=search_radius, ransac_threshold=ransac_threshold,
        min_inliers=min_inliers, seed=seed, window_size=window_size, tiles=tiles,
        tile_size=tile_size, coarse_size=coarse_size, progress=progress, overwrite=overwrite,
        report=report, plot=plot, gcps=gcps, inputs=(reference, moving), no_verify=no_verify,
        allow_reflection=allow_reflection,
    )  # fmt: skip
    config.cog, config.shifts = cog, str(shifts) if shifts else None
    from sarreg.pipeline import register

    result = register(reference, moving, output, config)
    ver = result.verification or {}
    typer.echo(
        f"registered {moving} onto {reference}: {result.model}, predicted error "
        f"{result.predicted_error:.2f} px, check {ver.get('verdict', '-')} "
        f"({ver.get('windows_agree', 0)}/{ver.get('windows_tried', 0)} windows), "
        f"{result.n_inliers} inliers of {result.n_matches} matches (keypoint scatter "
        f"{result.rmse:.2f} px), {result.timings.get('total', 0):.1f} s -> {result.output} "
        f"(report {result.report_path})"
    )


def check_inputs(reference, moving, band_ref: int, band_mov: int) -> None:
    """Open both inputs' metadata (missing file, not a raster, bad band: one-line error)
    before the network library is imported."""
    from sarreg import io

    io.raster_info(str(reference), band=band_ref)
    io.raster_info(str(moving), band=band_mov)


def config_from_options(
    *,
    model: Path | None,
    transform: str,
    mode: str,
    resampling: str,
    band_ref: int,
    band_mov: int,
    kind_ref: str,
    kind_mov: str,
    max_size: int,
    top_k: int | None,
    scales: str | None,
    min_similarity: float | None,
    context: bool = True,
    ratio: float | None,
    no_prior: bool,
    search_radius: float,
    ransac_threshold: float,
    min_inliers: int,
    seed: int,
    window_size: int | None,
    tiles: int | None,
    tile_size: int | None,
    coarse_size: int = 1024,
    progress: bool = False,
    overwrite: bool = False,
    report: Path | None = None,
    plot: Path | None = None,
    gcps: Path | None = None,
    inputs: tuple[Path, Path] | None = None,
    no_verify: bool = False,
    allow_reflection: bool = False,
):
    """The :class:`~sarreg.pipeline.RegisterConfig` of ``sarreg register``'s options (shared
    with ``sarreg batch``, which passes the same registration options)."""
    from dataclasses import replace

    from sarreg.config import check_values
    from sarreg.pipeline import RegisterConfig

    # every value given is checked before any config object is built (ConfigError, exit 12)
    check_values({k: v for k, v in {
        "transform": transform, "mode": mode, "resampling": resampling, "band_ref": band_ref,
        "band_mov": band_mov, "kind_ref": kind_ref, "kind_mov": kind_mov, "max_size": max_size,
        "extract.top_k": top_k, "match.min_similarity": min_similarity, "match.ratio": ratio,
        "search_radius": search_radius, "ransac_threshold": ransac_threshold,
        "min_inliers": min_inliers, "seed": seed, "window_size": window_size, "tiles": tiles,
        "tile_size": tile_size, "coarse_size": coarse_size, "gcps": gcps,
    }.items() if v is not None})  # fmt: skip
    if inputs is not None:  # input errors before the network library is imported
        check_inputs(*inputs, band_ref, band_mov)
    config = RegisterConfig(
        model=str(model) if model else None,
        transform=transform,
        mode=mode,
        resampling=resampling,
        band_ref=band_ref,
        band_mov=band_mov,
        kind_ref=kind_ref,
        kind_mov=kind_mov,
        max_size=max_size,
        use_prior=not no_prior,
        search_radius=search_radius,
        ransac_threshold=ransac_threshold,
        min_inliers=min_inliers,
        overwrite=overwrite,
        report=str(report) if report else None,
        plot=str(plot) if plot else None,
        progress=progress,
        seed=seed,
        window_size=window_size,
        tiles=tiles,
        tile_size=tile_size,
        coarse_size=coarse_size,
        gcps=str(gcps) if gcps else None,
        verify=not no_verify,
        allow_reflection=allow_reflection,
    )
    config.extract = _extract_overrides(config.extract, top_k, scales, progress, context)
    if min_similarity is not None or ratio is not None:
        config.match = replace(
            config.match,
            **({"min_similarity": min_similarity} if min_similarity is not None else {}),
            **({"ratio": ratio} if ratio is not None else {}),
        )
    return config


def _extract_overrides(cfg, top_k, scales, progress, context=True):
    from dataclasses import replace

    from sarreg.config import check_value
    from sarreg.errors import ConfigError

    changes = {}
    if top_k is not None:
        check_value("extract.top_k", top_k)
        changes["top_k"] = top_k
    if scales:
        try:
            values = tuple(float(s) for s in scales.split(",") if s.strip())
        except ValueError as err:
            raise ConfigError(
                f"--scales {scales!r} is not a list of numbers", "use e.g. --scales 1,0.71,0.5"
            ) from err
        check_value("extract.scales", values)
        changes["scales"] = values
    if hasattr(cfg, "progress"):
        changes["progress"] = progress
    if not context:
        changes["context_scale"] = None
    return replace(cfg, **changes)


def _model_extract_config(model: str | None, base):
    """``base`` with the extraction settings recorded in checkpoint ``model`` (e.g. the
    authors' pyramid of an imported naver checkpoint); ``base`` as it is when the model
    records none or cannot be read here (the command then reports the model error)."""
    from sarreg.errors import CheckpointError
    from sarreg.pipeline import load_model  # cached: the command reuses the loaded model

    try:
        return load_model(model).extract_config(base)
    except CheckpointError:
        return base


def extract_cmd(
    image: Path = typer.Argument(..., help="Image to extract features from."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .npz file."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint; default: bundled."),
    band: int = typer.Option(1, "--band", help="Band (1-based)."),
    kind: str = typer.Option("auto", "--kind", help="auto | power | amplitude | db | display."),
    max_size: int = typer.Option(4096, "--max-size", help="Decimate reads above this size."),
    top_k: int | None = typer.Option(None, "--top-k", help="Keypoints to keep."),
    scales: str | None = typer.Option(None, "--scales", help="Comma-separated pyramid scales."),
    context: bool | None = typer.Option(
        None,
        "--context/--no-context",
        help="Descriptors extended by their surroundings at half resolution (2 x 128 values) "
        "or the network's alone; default: the model's setting (on, off for imported naver "
        "checkpoints).",
        show_default=False,
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    from dataclasses import replace

    from sarreg.config import check_value
    from sarreg.features import ExtractConfig
    from sarreg.pipeline import extract_file

    check_value("max_size", max_size)
    base = _model_extract_config(str(model) if model else None, ExtractConfig())
    if context and base.context_scale is None:
        base = replace(base, context_scale=ExtractConfig().context_scale)
    cfg = _extract_overrides(base, top_k, scales, progress, context is not False)
    feats = extract_file(
        image,
        output,
        model=str(model) if model else None,
        band=band,
        kind=kind,
        max_size=max_size,
        config=cfg,
        overwrite=overwrite,
    )
    typer.echo(f"{len(feats)} keypoints from {image} -> {output}")
