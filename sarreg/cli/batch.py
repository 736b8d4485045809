"""``sarreg batch``: register many moving scenes as Dask tasks, resumably (see sarreg.batch)."""

from __future__ import annotations

from pathlib import Path

import typer

from sarreg.cli.options import BATCH, config_from_options, with_options

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


def attach(app: typer.Typer) -> None:
    app.command("batch", help=BATCH_HELP, no_args_is_help=True)(batch_cmd)


@with_options(BATCH)
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
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar over scenes."
    ),
    **options,
) -> None:
    """``sarreg batch``; ``options``: the registration options of
    :data:`sarreg.cli.options.OPTIONS` that batch has."""
    from sarreg.batch import BatchSettings, plan_jobs, run_batch
    from sarreg.errors import SceneFailuresError

    config = config_from_options(BATCH, options)
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
