"""``sarreg batch``: register many moving scenes as Dask tasks, resumably (see sarreg.batch)."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from sarreg.cli.register import config_from_options, register_cmd

# Paragraphs are single lines (help renderers keep line breaks); examples keep theirs.
BATCH_HELP = (
    "Register many MOVING scenes onto REFERENCE (or the pairs of a CSV) into the folder -o.\n\n"
    "Each scene runs as a task on a local Dask cluster (--workers processes, each registering "
    "one scene at a time with --threads-per-worker threads), on an existing cluster "
    "(--scheduler), or in this process (--workers 0). The model is loaded once per worker.\n\n"
    "Resumable: a scene whose output and report exist for the same inputs (path, size, "
    "modification time), settings and model is skipped, so running the same command again "
    "finishes an interrupted batch. A failed scene is recorded and the others go on; it is "
    "not retried with the same inputs and settings unless --retry-failed.\n\n"
    "The output folder gets NAME.tif, NAME.json (as sarreg register writes them) and "
    "NAME.batch.json (the scene's status) per scene (NAME = the moving file's stem, or the "
    "CSV's output column), and batch_summary.csv and batch_summary.geojson (status, "
    "inliers, RMSE, time and error per scene; footprints in EPSG:4326). Exit code 0 when every "
    "scene is ok or skipped, 18 when some failed.\n\n"
    "Examples:\n\n"
    "  sarreg batch -r ref.tif 'scenes/*.tif' -o aligned/\n\n"
    "  sarreg batch -r ref.tif --moving-list scenes.txt -o aligned/ --workers 4\n\n"
    "  sarreg batch --pairs pairs.csv -o aligned/ --scheduler tcp://10.0.0.5:8786\n"
)

#: The registration options of ``sarreg register``, shared (same flags, defaults and help).
_REGISTER_OPTIONS = {
    name: p.default for name, p in inspect.signature(register_cmd).parameters.items()
}


def attach(app: typer.Typer) -> None:
    app.command("batch", help=BATCH_HELP, no_args_is_help=True)(batch_cmd)


def batch_cmd(
    moving: list[str] | None = typer.Argument(
        None, metavar="MOVING...", help="Moving scenes: paths or quoted glob patterns."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (created if needed)."),
    reference: Path | None = typer.Option(
        None, "--reference", "-r", help="Reference image that every moving scene is registered to."
    ),
    moving_list: Path | None = typer.Option(
        None, "--moving-list", help="Text file of moving scenes, one path or pattern per line."
    ),
    pairs: Path | None = typer.Option(
        None,
        "--pairs",
        help="CSV with the columns reference,moving (optional: output) instead of -r/MOVING.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="Local Dask worker processes (default: CPU cores / threads per worker); "
        "0 = no Dask, one scene after the other in this process.",
    ),
    threads_per_worker: int = typer.Option(
        1, "--threads-per-worker", help="PyTorch/OpenCV threads per worker (one scene each)."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Existing Dask scheduler (tcp://host:port) to use."
    ),
    force: bool = typer.Option(False, "--force", help="Redo scenes that are up to date."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Retry scenes that failed before with the same settings."
    ),
    model: Path | None = _REGISTER_OPTIONS["model"],
    transform: str = _REGISTER_OPTIONS["transform"],
    mode: str = _REGISTER_OPTIONS["mode"],
    resampling: str = _REGISTER_OPTIONS["resampling"],
    band_ref: int = _REGISTER_OPTIONS["band_ref"],
    band_mov: int = _REGISTER_OPTIONS["band_mov"],
    kind_ref: str = _REGISTER_OPTIONS["kind_ref"],
    kind_mov: str = _REGISTER_OPTIONS["kind_mov"],
    max_size: int = _REGISTER_OPTIONS["max_size"],
    top_k: int | None = _REGISTER_OPTIONS["top_k"],
    scales: str | None = _REGISTER_OPTIONS["scales"],
    context: bool = _REGISTER_OPTIONS["context"],
    min_similarity: float | None = _REGISTER_OPTIONS["min_similarity"],
    ratio: float | None = _REGISTER_OPTIONS["ratio"],
    no_prior: bool = _REGISTER_OPTIONS["no_prior"],
    search_radius: float = _REGISTER_OPTIONS["search_radius"],
    ransac_threshold: float = _REGISTER_OPTIONS["ransac_threshold"],
    min_inliers: int = _REGISTER_OPTIONS["min_inliers"],
    seed: int = _REGISTER_OPTIONS["seed"],
    window_size: int | None = _REGISTER_OPTIONS["window_size"],
    coarse_size: int = _REGISTER_OPTIONS["coarse_size"],
    tiles: int | None = _REGISTER_OPTIONS["tiles"],
    tile_size: int | None = _REGISTER_OPTIONS["tile_size"],
    cog: bool = _REGISTER_OPTIONS["cog"],
    no_verify: bool = _REGISTER_OPTIONS["no_verify"],
    allow_reflection: bool = _REGISTER_OPTIONS["allow_reflection"],
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar over scenes."
    ),
) -> None:
    from sarreg.batch import BatchSettings, plan_jobs, run_batch
    from sarreg.errors import SceneFailuresError

    config = config_from_options(
        model=model, transform=transform, mode=mode, resampling=resampling, band_ref=band_ref,
        band_mov=band_mov, kind_ref=kind_ref, kind_mov=kind_mov, max_size=max_size, top_k=top_k,
        scales=scales, context=context, min_similarity=min_similarity, ratio=ratio,
        no_prior=no_prior, search_radius=search_radius, ransac_threshold=ransac_threshold,
        min_inliers=min_inliers, seed=seed, window_size=window_size, tiles=tiles,
        tile_size=tile_size, coarse_size=coarse_size, no_verify=no_verify,
        allow_reflection=allow_reflection,
    )  # fmt: skip
    config.cog = cog
    jobs = plan_jobs(
        output, reference=reference, moving=moving or (), moving_list=moving_list, pairs_csv=pairs
    )
    settings = BatchSettings(
        workers=workers,
        threads_per_worker=threads_per_worker,
        scheduler=scheduler,
        progress=progress,
        force=force,
        retry_failed=retry_failed,
    )
    summary = run_batch(jobs, config, output, settings)
    typer.echo(f"batch: {summary.describe()}")
    failed = summary.failed
    for r in failed:
        typer.echo(f"  failed: {r.name} ({r.moving}): {r.message}", err=True)
    if failed:
        raise SceneFailuresError(
            f"{len(failed)} of {len(summary.results)} scenes failed",
            f"see {summary.csv_path}; fix those inputs and run the same command again "
            "(finished scenes are skipped; --retry-failed retries the failed ones)",
        )
