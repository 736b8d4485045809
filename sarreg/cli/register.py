"""``sarreg register`` and ``sarreg extract``."""

from __future__ import annotations

from pathlib import Path

import typer

from sarreg.cli.options import REGISTER, config_from_options, parse_scales, with_options

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


@with_options(REGISTER)
def register_cmd(
    reference: Path = typer.Argument(..., help="Reference (fixed) image, any GDAL raster."),
    moving: Path = typer.Argument(..., help="Moving image, registered onto the reference."),
    output: Path = typer.Option(..., "--output", "-o", help="Output GeoTIFF."),
    **options,
) -> None:
    """``sarreg register``; ``options``: the registration options of
    :data:`sarreg.cli.options.OPTIONS`."""
    config = config_from_options(REGISTER, options, inputs=(reference, moving))
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


def _extract_overrides(cfg, top_k, scales, progress, context=True):
    """``sarreg extract``'s options over the extraction settings ``cfg``."""
    from dataclasses import replace

    from sarreg.config import check_value

    changes = {}
    if top_k is not None:
        check_value("extract.top_k", top_k)
        changes["top_k"] = top_k
    if scales:
        values = parse_scales(scales)
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

    check_value("input.max_size", max_size)
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
