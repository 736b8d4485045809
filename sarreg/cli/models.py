"""``sarreg models``: list, inspect and convert model checkpoints."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger(__name__)

# Paragraphs are single lines (help renderers keep line breaks); examples keep theirs.
MODELS_HELP = (
    "List, inspect and convert model checkpoints.\n\n"
    "Checkpoints are sarreg files (written by `sarreg train` or `sarreg models convert`) or "
    'the checkpoints published with the R2D2 paper ("naver" format, converted on the fly).\n\n'
    "Examples:\n\n"
    "  sarreg models list\n\n"
    "  sarreg models info runs/fast_r2d2_sar/best.pt\n\n"
    "  sarreg models convert faster2d2_WASF_N16.pt faster2d2_grey.pt\n"
)

LIST_HELP = (
    "Show the default model and the other checkpoints next to it.\n\n"
    "The default model is $SARREG_MODEL when set, else the packaged weights. Exits with 0 "
    "also when no model is installed yet.\n\n"
    "Example:\n\n"
    "  sarreg models list\n"
)

INFO_HELP = (
    "Describe checkpoint CKPT: architecture, size, checksum and provenance.\n\n"
    "Examples:\n\n"
    "  sarreg models info runs/fast_r2d2_sar/best.pt\n\n"
    "  sarreg models info r2d2_WASF_N16.pt\n"
)

CONVERT_HELP = (
    "Convert checkpoint IN (naver R2D2 or sarreg format) into a sarreg checkpoint OUT.\n\n"
    "A naver checkpoint runs the network it was trained as (the Fast variant max-pools) with "
    "its own input convention: its RGB ImageNet normalization is folded into the first "
    "convolution, so that the converted model takes the 8-bit display image / 255 as grey "
    "(or RGB with --channels 3) and gives the same outputs; OUT records that preprocessing "
    "and the authors' multi-scale extraction (scale factor 2^0.25, levels of 256..1024 px, "
    "ranked by reliability x repeatability, no context descriptors), which `sarreg extract` "
    "uses unless told otherwise (--extract-defaults sarreg records none). A sarreg checkpoint "
    "is re-written without its training resume state (optimizer, RNG), which makes it "
    "smaller. The source file and its sha256 are recorded in the metadata. An existing OUT "
    "is replaced only with --overwrite.\n\n"
    "Examples:\n\n"
    "  sarreg models convert r2d2_WASF_N16.pt r2d2_grey.pt\n\n"
    "  sarreg models convert faster2d2_WASF_N16.pt faster2d2_sarreg_pyramid.pt "
    "--extract-defaults sarreg\n\n"
    "  sarreg models convert runs/fast_r2d2_sar/last.pt fast_r2d2_sar.pt --overwrite\n"
)

#: metadata keys shown first by ``info``/``list``, in this order
_META_ORDER = (
    "name",
    "source",
    "created",
    "sarreg_version",
    "step",
    "license",
    "licence",
    "converted",
    "converted_from",
    "converted_from_sha256",
)
#: longest metadata value shown in full (characters)
_MAX_VALUE = 160


def attach(app: typer.Typer) -> None:
    """Register the ``models`` sub-command group on ``app`` (once)."""
    for group in app.registered_groups:
        if group.name == "models":
            return
    models_app = typer.Typer(
        name="models", help=MODELS_HELP, no_args_is_help=True, add_completion=False
    )
    models_app.command("list", help=LIST_HELP)(list_cmd)
    models_app.command("info", help=INFO_HELP, no_args_is_help=True)(info_cmd)
    models_app.command("convert", help=CONVERT_HELP, no_args_is_help=True)(convert_cmd)
    app.add_typer(models_app, name="models", help=MODELS_HELP)


# ---------------------------------------------------------------------------------------------
# commands


def list_cmd() -> None:
    """``sarreg models list``."""
    from sarreg.model.checkpoint import MODEL_ENV, default_model_path

    path = default_model_path()
    origin = f"${MODEL_ENV}" if os.environ.get(MODEL_ENV, "").strip() else "packaged"
    typer.echo(f"default model ({origin}): {path}")
    if path.is_file():
        _echo_lines(describe_checkpoint(path), indent="  ")
    else:
        typer.echo(
            "  not installed: no default model is available yet; pass --model PATH to the "
            f"commands, set {MODEL_ENV}, or train one with `sarreg train`"
        )
    folder = path.parent
    others = sorted(p for p in folder.glob("*.pt") if p.is_file() and p != path)
    if not others:
        typer.echo(f"other checkpoints in {folder}: none")
        return
    typer.echo(f"other checkpoints in {folder}:")
    from sarreg.errors import CheckpointError

    for other in others:
        try:
            typer.echo(f"  {other.name}: {_load(other).summary()}, {_size(other)}")
        except CheckpointError as err:
            typer.echo(f"  {other.name}: unreadable ({err})")


def info_cmd(
    checkpoint: Path = typer.Argument(
        ..., metavar="CKPT", help="Checkpoint file (sarreg or naver R2D2 format)."
    ),
) -> None:
    """``sarreg models info CKPT``."""
    typer.echo(f"checkpoint: {checkpoint}")
    _echo_lines(describe_checkpoint(checkpoint), indent="  ")


def convert_cmd(
    src: Path = typer.Argument(..., metavar="IN", help="Naver R2D2 or sarreg checkpoint."),
    dst: Path = typer.Argument(..., metavar="OUT", help="sarreg checkpoint to write (.pt)."),
    channels: int | None = typer.Option(
        None,
        "--channels",
        help="Input channels of a converted naver model: 1 = grey (default) or 3 = RGB.",
    ),
    extract_defaults: str | None = typer.Option(
        None,
        "--extract-defaults",
        help="Extraction settings OUT records: 'authors' (the default for naver files: their "
        "pyramid and ranking) or 'sarreg' (none: sarreg's own pyramid and context "
        "descriptors). Default for sarreg files: keep theirs.",
        show_default=False,
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """``sarreg models convert IN OUT``."""
    ckpt = convert_checkpoint(
        src, dst, channels=channels, overwrite=overwrite, extract_defaults=extract_defaults
    )
    typer.echo(f"wrote {dst}: {ckpt.summary()}")
    typer.echo(f"  sha256: {_sha256(dst)}")


# ---------------------------------------------------------------------------------------------
# library functions behind the commands


def describe_checkpoint(path: Path) -> list[str]:
    """Lines describing checkpoint ``path`` (raises :class:`CheckpointError` if unreadable).

    Covers the file (size, sha256), the format, the architecture and constructor arguments,
    the parameter count, the preprocessing it was trained with and its metadata.
    """
    ckpt = _load(path)
    n_params = sum(p.numel() for p in ckpt.net.parameters())
    fmt = ckpt.source_format
    if fmt == "naver":
        fmt = "naver R2D2 (converted on load to a 1-channel model; the authors' input and pyramid)"
    lines = [
        f"summary: {ckpt.summary()}",
        f"file size: {_size(path)}",
        f"sha256: {ckpt.sha256 or _sha256(path)}",
        f"format: {fmt}",
        f"arch: {ckpt.arch}",
        "kwargs: " + " ".join(f"{k}={v}" for k, v in ckpt.kwargs.items()),
        f"parameters: {n_params}",
        "preprocess: " + (_compact(ckpt.preprocess) if ckpt.preprocess else "not recorded"),
        "extract: " + (_compact(ckpt.extract) if ckpt.extract else "sarreg defaults"),
        "training state: " + ("included (resumable)" if ckpt.training else "none"),
    ]
    meta = dict(ckpt.meta)
    if not meta:
        lines.append("metadata: none")
        return lines
    lines.append("metadata:")
    train_config = meta.pop("train_config", None)
    keys = [k for k in _META_ORDER if k in meta] + sorted(k for k in meta if k not in _META_ORDER)
    for key in keys:
        lines.append(f"  {key}: {_compact(meta[key])}")
    if isinstance(train_config, dict):
        lines.extend("  " + line for line in _train_config_lines(train_config))
    return lines


def convert_checkpoint(
    src: Path,
    dst: Path,
    *,
    channels: int | None = None,
    overwrite: bool = False,
    extract_defaults: str | None = None,
) -> Any:
    """Write ``src`` (naver or sarreg checkpoint) as a sarreg checkpoint ``dst``.

    Args:
        src: input checkpoint.
        dst: output path; an existing file is replaced only with ``overwrite``.
        channels: input channels of a converted naver model (1 or 3; default 1). For a
            sarreg checkpoint it must be None or equal to the model's own.
        overwrite: replace an existing ``dst``.
        extract_defaults: extraction settings ``dst`` records: 'authors' (naver files only;
            their default: :data:`sarreg.model.checkpoint.NAVER_EXTRACT`), 'sarreg' (none), or
            None (naver: 'authors'; sarreg: those ``src`` records).

    Returns the written :class:`sarreg.model.Checkpoint`. Raises :class:`OutputExistsError`,
    :class:`CheckpointError` (missing/invalid input), :class:`ConfigError` (bad channels) or
    :class:`OutputError` (cannot write).
    """
    from sarreg.errors import ConfigError, OutputExistsError
    from sarreg.model.checkpoint import import_naver, save_checkpoint

    src, dst = Path(src), Path(dst)
    if channels not in (None, 1, 3):
        raise ConfigError(f"--channels must be 1 or 3, got {channels}", "use --channels 1 or 3")
    if extract_defaults not in (None, "authors", "sarreg"):
        raise ConfigError(
            f"--extract-defaults must be 'authors' or 'sarreg', got {extract_defaults!r}",
            "use --extract-defaults authors or --extract-defaults sarreg",
        )
    from sarreg.outputs import guard_outputs

    guard_outputs([("output", dst)], [("checkpoint", src)])
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst} exists", "pass --overwrite to replace it")
    ckpt = _load(src)
    if ckpt.source_format == "naver":
        if channels == 3:
            ckpt = import_naver(src, channels=3)
    elif channels is not None and channels != ckpt.config["in_channels"]:
        raise ConfigError(
            f"{src} is a sarreg model with {ckpt.config['in_channels']} input channel(s); "
            "--channels applies to naver checkpoints only",
            "leave --channels out",
        )
    elif extract_defaults == "authors":
        raise ConfigError(
            f"{src} is a sarreg model; --extract-defaults authors applies to naver "
            "checkpoints only",
            "leave --extract-defaults out or use --extract-defaults sarreg",
        )
    if extract_defaults == "sarreg":
        ckpt.extract = None
    meta = dict(ckpt.meta)
    meta.update(converted_from=src.name, converted_from_sha256=_sha256(src))
    save_checkpoint(dst, ckpt.net, meta=meta, preprocess=ckpt.preprocess, extract=ckpt.extract)
    log.info("converted %s (%s) to %s", src, ckpt.source_format, dst)
    ckpt.path = str(dst)
    ckpt.source_format = "sarreg"
    ckpt.meta = meta
    ckpt.training = None
    return ckpt


# ---------------------------------------------------------------------------------------------
# helpers


def _load(path: Path) -> Any:
    """:func:`sarreg.model.load_checkpoint` on CPU (naver files are converted on the fly)."""
    from sarreg.errors import CheckpointError
    from sarreg.model.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "not found"
        raise CheckpointError(f"model checkpoint {what}: {path}", "check the path")
    return load_checkpoint(path, device="cpu")


def _train_config_lines(cfg: dict) -> list[str]:
    """The parts of a stored training config that say what the model was trained on."""
    lines = []
    data = cfg.get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    if sources:
        names = []
        for src in sources:
            if isinstance(src, dict):
                names.append(str(src.get("path") or src.get("name") or _compact(src)))
            else:
                names.append(str(src))
        lines.append("training data: " + _truncate(", ".join(names)))
    else:
        lines.append("training data: no sources recorded")
    for key in ("steps", "batch_size", "seed"):
        if key in cfg:
            lines.append(f"training {key}: {cfg[key]}")
    model = cfg.get("model")
    if isinstance(model, dict):
        lines.append(f"training model: {_compact(model)}")
    return lines


def _compact(value: Any) -> str:
    """One-line text of a JSON-like value, shortened to :data:`_MAX_VALUE` characters."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return _truncate(" ".join(text.split()))


def _truncate(text: str) -> str:
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _size(path: Path) -> str:
    """Human-readable file size with the exact byte count."""
    n = path.stat().st_size
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _sha256(path: Path) -> str:
    from sarreg.model.checkpoint import file_sha256

    return file_sha256(path)


def _echo_lines(lines: list[str], indent: str = "") -> None:
    for line in lines:
        typer.echo(indent + line)
