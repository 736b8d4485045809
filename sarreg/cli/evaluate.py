"""``sarreg evaluate``: build synthetic benchmarks and compare sarreg with classic baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)

# Paragraphs are single lines (help renderers keep line breaks); examples keep theirs.
EVALUATE_HELP = (
    "Measure registration: MMA@1..10 px, repeatability, registration RMSE and success rates, "
    "for sarreg and the classic SAR baselines on the same pairs.\n\n"
    "Examples:\n\n"
    "  sarreg evaluate synth --images data/ --out bench/medium --n 50 --seed 0\n\n"
    "  sarreg evaluate run bench/medium --out results/medium\n\n"
    "  sarreg evaluate run bench/medium --method sarreg:runs/mine/best.pt --method sift\n"
)

SYNTH_HELP = (
    "Build a reproducible synthetic benchmark from real SAR images.\n\n"
    "Images on one grid (same size, geotransform and CRS) give multi-date pairs (the real "
    "temporal change stays in); other images give single-image pairs with independent speckle "
    "on both sides. Each pair is warped by a random transform of the chosen difficulty (easy: "
    "rotation <= 5 deg, scale 0.9..1.1; medium: <= 15 deg, 0.8..1.25; hard: <= 30 deg, "
    "0.6..1.6, perspective; extreme: any rotation, scale 0.3..3, half of the pairs mirrored, "
    "registered with reflections allowed) with the training pair generator, in a seed space "
    "apart from training's. Writes pair_XXXX_ref.tif, pair_XXXX_mov.tif, pair_XXXX.json "
    "(ground truth: 3x3 matrix, moving px -> reference px) and benchmark.yaml.\n\n"
    "Examples:\n\n"
    "  sarreg evaluate synth --images data/umbra_mount_yasur.tif --images data/opera_rtc_s1 "
    "--out bench/medium --n 50\n\n"
    "  sarreg evaluate synth --images heldout_tiles/ --out bench/hard --difficulty hard "
    "--seed 3\n"
)

RUN_HELP = (
    "Run methods on benchmark BENCH (a folder of pair_XXXX.json or an index .csv/.yaml) and "
    "write results.md, results.csv, pairs.json, mma.png and results_by_<tag>.md to --out.\n\n"
    "Methods: register (the whole sarreg register path: search, verification, error estimate; "
    "a refused pair is a failure; predicted against true error per pair in errors.md), "
    "sarreg (bundled model's keypoints), sarreg:PATH (any checkpoint, naver R2D2 format too), "
    "sift, akaze, orb, sarsift, phasecorr; default all available (AKAZE only where OpenCV "
    "has it). All keypoint methods use mutual "
    "nearest-neighbour matching and the same RANSAC + least squares "
    "(sarreg.geometry.fit_transform). A method that fails on a pair counts as a failure and "
    "the run goes on.\n\n"
    "Examples:\n\n"
    "  sarreg evaluate run bench/medium --out results/medium\n\n"
    "  sarreg evaluate run bench/medium -m sarreg -m sarreg:r2d2_WASF_N16.pt -m sarsift\n"
)


def attach(app: typer.Typer) -> None:
    """Register the ``evaluate`` sub-command group on ``app`` (once)."""
    for group in app.registered_groups:
        if group.name == "evaluate":
            return
    sub = typer.Typer(name="evaluate", help=EVALUATE_HELP, no_args_is_help=True)
    sub.command("synth", help=SYNTH_HELP, no_args_is_help=True)(synth_cmd)
    sub.command("run", help=RUN_HELP, no_args_is_help=True)(run_cmd)
    app.add_typer(sub, name="evaluate", help=EVALUATE_HELP)


def synth_cmd(
    images: list[Path] = typer.Option(
        ..., "--images", "-i", help="SAR image file or folder; repeat for several."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Benchmark folder to write."),
    n: int = typer.Option(50, "--n", help="Number of pairs."),
    seed: int = typer.Option(0, "--seed", help="Benchmark seed (same seed -> same pairs)."),
    difficulty: str = typer.Option(
        "medium", "--difficulty", "-d", help="easy | medium | hard | extreme."
    ),
    crop: int = typer.Option(512, "--crop", help="Pair side in pixels (smaller images: less)."),
    min_size: int = typer.Option(128, "--min-size", help="Leave out images smaller than this."),
    min_valid: float = typer.Option(
        0.3, "--min-valid", help="Fewest valid pixels (fraction) of a crop window."
    ),
    display_as: str = typer.Option(
        "intensity",
        "--display-as",
        help="8-bit display products encode: intensity | amplitude.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing benchmark."),
) -> None:
    from sarreg.evaluation.synth import build_benchmark

    pairs = build_benchmark(
        images, out, n=n, seed=seed, difficulty=difficulty, crop=crop, min_size=min_size,
        min_valid=min_valid, display_as=display_as, overwrite=overwrite,
    )  # fmt: skip
    multi = sum(bool(p.tags.get("multidate")) for p in pairs)
    typer.echo(
        f"wrote {len(pairs)} {difficulty} pairs ({multi} multi-date) to {out} "
        f"(seed {seed}); run: sarreg evaluate run {out}"
    )


def run_cmd(
    bench: Path = typer.Argument(..., help="Benchmark folder or index .csv/.yaml."),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        "-m",
        help="Method (repeat, or comma-separated): sarreg, sarreg:PATH, sift, akaze, orb, "
        "sarsift, phasecorr. Default: all available (AKAZE needs an OpenCV that has it).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Results folder (default: BENCH/results)."
    ),
    max_keypoints: int = typer.Option(2000, "--max-keypoints", help="Keypoints per image."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="translation | similarity | affine | homography (default: each pair's, else affine).",
    ),
    ransac_threshold: float = typer.Option(
        3.0, "--ransac-threshold", help="RANSAC inlier threshold, reference pixels."
    ),
    seed: int = typer.Option(0, "--seed", help="RANSAC seed."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Leave out pairs with missing or bad files (reported)."
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write mma.png."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Per-pair status."),
) -> None:
    from sarreg.errors import ConfigError
    from sarreg.evaluation.methods import default_methods
    from sarreg.evaluation.run import RunConfig, run_benchmark
    from sarreg.evaluation.tables import markdown_table, write_outputs
    from sarreg.geometry import MODELS

    if model is not None and model not in MODELS:
        raise ConfigError(f"unknown --model {model!r}", f"use one of {', '.join(MODELS)}")
    if max_keypoints < 10:
        raise ConfigError(f"--max-keypoints {max_keypoints} is too small", "use e.g. 2000")
    cfg = RunConfig(
        methods=tuple(method) if method else default_methods(),
        max_keypoints=max_keypoints,
        model=model,
        ransac_threshold=ransac_threshold,
        seed=seed,
        skip_invalid=skip_invalid,
    )
    from sarreg.outputs import evaluate_guard

    folder = out if out is not None else (bench if bench.is_dir() else bench.parent) / "results"
    evaluate_guard(bench, folder, cfg.methods)
    echo = (lambda s: typer.echo(s, err=True)) if progress else None
    result = run_benchmark(bench, cfg, progress=echo)
    n_pairs = len({r["pair"] for r in result.records})
    paths = write_outputs(result, folder, title=f"{bench.name}: {n_pairs} pairs", plot=plot)
    typer.echo(markdown_table(result.summary))
    if result.skipped:
        typer.echo(f"{len(result.skipped)} pair(s) left out: {'; '.join(result.skipped)}")
    failed = sum(r["failures"] for r in result.summary)
    typer.echo(
        f"{n_pairs} pairs x {len(result.summary)} methods, {failed} failed registrations; "
        f"results in {paths['markdown'].parent}"
    )
