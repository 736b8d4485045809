"""``sarreg train``: train a Fast-R2D2 / R2D2 keypoint network on SAR images."""

from __future__ import annotations

from pathlib import Path

import typer

TRAIN_HELP = (
    "Train a keypoint network on SAR images (R2D2 objective on synthetic pairs).\n\n"
    "Pairs are made from each image by a random warp and independent speckle on both sides; "
    "folders of same-grid dates give real multi-date pairs (--pairs). Writes last.pt "
    "(resumable), best.pt (best validation MMA@3), log.csv, val.csv, train.log and config.yaml "
    "to --out.\n\n"
    "A --config NAME is a preset shipped with sarreg (--list-configs prints them; "
    "fast_r2d2_sar: the shipped model's recipe; smoke: a few steps on the bundled samples); "
    "a path to a YAML file works too, its relative paths taken against its folder. "
    "Command-line options override it; --set KEY=VALUE overrides any setting (dotted keys, "
    "e.g. --set optim.schedule=step). Without --out a run writes to runs/NAME under the "
    "working directory.\n\n"
    "Examples:\n\n"
    "  sarreg train --config smoke\n\n"
    "  sarreg train --config smoke --data my_sar_tiles/ --steps 2\n\n"
    "  sarreg train --data /data/s1_tiles --out runs/mine --steps 3000 --device cuda\n\n"
    "  sarreg train --config fast_r2d2_sar --resume runs/fast_r2d2_sar/last.pt --steps 8000\n"
)


def attach(app: typer.Typer) -> None:
    app.command("train", help=TRAIN_HELP)(train_cmd)


def train_cmd(
    data: list[Path] | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Folder (or file) of training images; repeat for several. Replaces the config's "
        "data sources.",
    ),
    config: str | None = typer.Option(
        None, "--config", "-c", help="Preset NAME (see --list-configs) or path to a YAML file."
    ),
    list_configs: bool = typer.Option(
        False, "--list-configs", help="Print the shipped presets and exit."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder."),
    steps: int | None = typer.Option(None, "--steps", help="Total training steps."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue a run from its last.pt (same step and optimizer)."
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Start from these weights (sarreg or naver R2D2 checkpoint)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Pairs per step."),
    crop: int | None = typer.Option(None, "--crop", help="Training image side (pixels)."),
    lr: float | None = typer.Option(None, "--lr", help="AdamW learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (0 = default)."),
    pairs: bool = typer.Option(
        False, "--pairs", help="--data folders hold same-grid multi-date images (real pairs)."
    ),
    val_data: list[Path] | None = typer.Option(
        None, "--val-data", help="Held-out validation images (files or folders)."
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Write last.pt every N steps."
    ),
    val_every: int | None = typer.Option(None, "--val-every", help="Validate every N steps."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Any setting as KEY=VALUE (dotted, e.g. loss.kappa=0.6)."
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."
    ),
) -> None:
    from sarreg.training.config import (
        check_data_paths,
        describe_presets,
        load_config,
        parse_override,
    )

    if list_configs:
        for name, what in describe_presets():
            typer.echo(f"{name:16s} {what}")
        return
    from sarreg.training.loop import train

    values: dict[str, object] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        values[key] = value
    flags = {
        "steps": steps,
        "device": device,
        "batch_size": batch_size,
        "data.crop": crop,
        "optim.lr": lr,
        "seed": seed,
        "threads": threads,
        "checkpoint_every": checkpoint_every,
        "val.every": val_every,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if data:
        values["data.sources"] = [{"path": str(p.resolve()), "pairs": pairs} for p in data]
    if val_data:
        values["val.sources"] = [str(p.resolve()) for p in val_data]
    if out is not None:
        values["out"] = str(out.resolve())
    if config is None and not data:
        from sarreg.errors import ConfigError

        raise ConfigError(
            "no training data: give --data DIR or a --config with data sources",
            "e.g. sarreg train --data /path/to/sar_tiles, or sarreg train --config smoke",
        )
    cfg = check_data_paths(load_config(config, values), bool(data), bool(val_data))
    result = train(cfg, resume=resume, init=init, progress=progress)
    best = ""
    if result.best is not None and result.best_mma is not None:
        best = f", best {result.best} (val MMA@3 {result.best_mma:.3f})"
    typer.echo(
        f"trained {result.step} steps ({result.seconds_per_step:.2f} s/step): "
        f"last {result.last}{best}"
    )
