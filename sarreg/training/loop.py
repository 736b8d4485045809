"""The training loop: AdamW, warm-up + cosine/step schedule, checkpoints, validation, resume.

Outputs in ``cfg.out``:

- ``last.pt``: sarreg checkpoint (``sarreg.model.checkpoint``) with the resume state
  (step, optimizer, best validation) in its ``training`` entry; written atomically every
  ``checkpoint_every`` steps, at the end and on Ctrl-C.
- ``best.pt``: the weights with the best validation MMA@3 so far (no optimizer state).
- ``log.csv`` (losses every ``log_every`` steps), ``val.csv`` (MMA@1/3/5, matches),
  ``train.log`` (log lines), ``config.yaml`` (the exact settings) and TensorBoard events when
  ``tensorboard`` is installed.

A non-finite loss stops training with :class:`~sarreg.errors.TrainingError` naming the step and
the loss; ``last.pt`` then still holds the last good state.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarreg.errors import CheckpointError, ConfigError, DataError, TrainingError
from sarreg.model.checkpoint import load_checkpoint, save_checkpoint
from sarreg.model.r2d2 import R2D2Net
from sarreg.model.runtime import threads_restored
from sarreg.training import whiten
from sarreg.training.config import ModelConfig, OptimConfig, TrainConfig, save_config
from sarreg.training.data import (
    PairGenerator,
    PairStream,
    describe,
    list_rasters,
    load_source,
    validation_pairs,
)
from sarreg.training.step import LOSS_NAMES, compute_losses, train_forward
from sarreg.training.validate import ValResult, evaluate_pairs

logger = logging.getLogger(__name__)

_ARCH_KEYS = ("arch", "in_channels", "mchan", "dim", "relu22")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        step: steps done in total (including those before a resume).
        last: path of ``last.pt``.
        best: path of ``best.pt`` (None without validation).
        best_mma: best validation MMA@3 (None without validation).
        seconds_per_step: mean wall time of the training steps of this call.
        val_history: one dict per validation (step, mma1, mma3, mma5, matches, ...).
    """

    step: int
    last: Path
    best: Path | None
    best_mma: float | None
    seconds_per_step: float
    val_history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' requested but no CUDA GPU is available", "use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}", "use auto, cpu or cuda")
    return torch.device(name)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at (0-based) ``step`` of ``total``: warm-up then schedule."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step - cfg.warmup_steps) // cfg.step_size)
    span = max(total - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_net(model: ModelConfig) -> R2D2Net:
    """A fresh 1-channel network of the configured architecture."""
    return R2D2Net(
        arch=model.arch, in_channels=1, mchan=model.mchan, dim=model.dim, relu22=model.relu22
    )


def _arch_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={config.get(k)}" for k in _ARCH_KEYS)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (numpy randomness uses explicit seeded Generators)."""
    random.seed(seed)
    torch.manual_seed(seed)


class _CsvLog:
    """Append rows to a CSV file, writing the header when the file is new."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(columns)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        return None
    return SummaryWriter(str(out / "tensorboard"))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_data(cfg: TrainConfig):
    """Training sources (validation files removed) and the fixed validation pairs."""
    if not cfg.data.sources:
        raise DataError("no training data configured", "pass --data DIR or set data.sources")
    val_files: set[Path] = set()
    val_sources = []
    for src in cfg.val.sources:
        p = Path(src.path)
        if not p.exists():
            raise DataError(f"validation data not found: {p}", "fix val.sources in the config")
        val_files.update(f.resolve() for f in list_rasters(p))
    train_sources = []
    for src in cfg.data.sources:
        p = Path(src.path)
        if p.exists() and val_files and not (src.pairs and p.suffix.lower() == ".csv"):
            held = [f.name for f in list_rasters(p) if f.resolve() in val_files]
            if held:
                src = dataclasses.replace(src, exclude=tuple(src.exclude) + tuple(held))
                logger.info("held out for validation from %s: %s", p, ", ".join(held))
        train_sources.append(load_source(src, cfg.data.crop, cfg.synth))
    logger.info("training data: %s", describe(train_sources))
    pairs = []
    if cfg.val.sources and cfg.val.pairs > 0:
        for src in cfg.val.sources:
            val_sources.append(load_source(src, cfg.val.crop, cfg.val.synth))
        pairs = validation_pairs(
            val_sources, cfg.val.pairs, cfg.val.crop, cfg.val.synth, cfg.preprocess, cfg.val.seed
        )
        logger.info(
            "validation: %d pairs of %d px from %s", len(pairs), cfg.val.crop, describe(val_sources)
        )
    return train_sources, pairs, sorted(f.name for f in val_files)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _meta(cfg: TrainConfig, step: int, val_files: list[str], extra: dict | None) -> dict:
    meta = {
        "name": cfg.name,
        "source": "sarreg train",
        "step": step,
        "train_config": cfg.to_dict(),
        "val_files": list(val_files),
    }
    meta.update(extra or {})
    return meta


def _check_weights(net: torch.nn.Module, step: int, last: Path | None) -> None:
    for name, p in net.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise TrainingError(
                f"weights became non-finite ({name}) at step {step}",
                f"training stopped; the last good checkpoint is {last or 'none'}; "
                "lower --lr and resume from it",
            )


def start_state(
    cfg: TrainConfig, resume: str | Path | None, init: str | Path | None
) -> tuple[R2D2Net, dict | None]:
    """The network to train and, when resuming, the saved training state."""
    if resume is not None and init is not None:
        raise ConfigError("--resume and --init exclude each other", "give only one of them")
    want = build_net(cfg.model)
    if resume is not None:
        ck = load_checkpoint(resume)
        if not ck.training:
            raise CheckpointError(
                f"{resume} holds no training state (optimizer, step)",
                "resume from the last.pt of a sarreg train run, or start from its weights "
                "with --init",
            )
        got = {k: ck.config.get(k) for k in _ARCH_KEYS}
        need = {k: want.config.get(k) for k in _ARCH_KEYS}
        if got != need:
            raise CheckpointError(
                f"cannot resume: {resume} is a {_arch_text(got)} network but the config asks "
                f"for {_arch_text(need)}",
                "resume with the config of that run (config.yaml next to it) or use --init",
            )
        net = R2D2Net(**ck.config)
        net.load_state_dict(ck.net.state_dict())
        return net, ck.training
    if init is not None:
        ck = load_checkpoint(init)
        if ck.config.get("in_channels") != 1:
            raise CheckpointError(
                f"{init} takes {ck.config.get('in_channels')} input channels",
                "initialize from a 1-channel model (naver files are converted automatically)",
            )
        if any(ck.config.get(k) != want.config.get(k) for k in ("arch", "mchan", "dim")):
            logger.warning(
                "--init %s is a %s network; training that architecture instead of the config's %s",
                init,
                _arch_text(ck.config),
                _arch_text(want.config),
            )
        net = R2D2Net(**ck.config)
        net.load_state_dict(ck.net.state_dict())
        logger.info("initialized from %s (%s)", init, ck.source_format)
        return net, None
    return want, None


# --------------------------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    init: str | Path | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train a network as configured (see the module docstring for the outputs).

    Args:
        cfg: validated configuration (paths absolute).
        resume: ``last.pt`` of an earlier run: continue at its step with its optimizer state.
        init: checkpoint whose weights start a new run (sarreg or naver format).
        progress: tqdm progress bar (default: when stderr is a terminal).

    Raises ConfigError, DataError, CheckpointError, TrainingError (non-finite loss).
    """
    from sarreg.outputs import RunFolder, train_guard

    out = Path(cfg.out)
    train_guard(cfg, resume, init)
    run_folder = RunFolder.open(out)  # an early failure removes what this run created
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg_logger = logging.getLogger("sarreg")  # file: training progress + everyone's warnings
    pkg_logger.addHandler(handler)
    train_logger = logging.getLogger("sarreg.training")
    old_level = train_logger.level
    if train_logger.getEffectiveLevel() > logging.INFO:
        train_logger.setLevel(logging.INFO)
    try:
        with threads_restored():  # _train sets its own thread counts
            return _train(cfg, out, resume, init, progress)
    except BaseException:
        handler.close()
        run_folder.discard_if_untrained()
        raise
    finally:
        pkg_logger.removeHandler(handler)
        train_logger.setLevel(old_level)
        handler.close()


def _train(
    cfg: TrainConfig,
    out: Path,
    resume: str | Path | None,
    init: str | Path | None,
    progress: bool | None,
) -> TrainResult:
    from tqdm import tqdm

    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    import cv2

    cv2.setNumThreads(1)
    seed_everything(cfg.seed)
    net, state = start_state(cfg, resume, init)
    start = int(state["step"]) if state else 0
    end = cfg.stop_at or cfg.steps  # the schedule runs to cfg.steps; the run stops at end
    if start >= end:
        raise ConfigError(
            f"the checkpoint is already at step {start} of {end}",
            "raise --steps to train longer",
        )
    train_sources, val_pairs, val_files = load_data(cfg)
    whiten_pairs = whiten.whitening_pairs(train_sources, cfg) if cfg.whiten.pairs else []
    save_config(cfg, out / "config.yaml")
    net.to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    best = {"mma3": None, "step": None}
    if state:
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"cannot restore the optimizer state of {resume} ({err})",
                "resume with the config of that run or use --init",
            ) from err
        best.update(state.get("best") or {})
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        logger.info("resumed %s at step %d", resume, start)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    gen = PairGenerator(train_sources, cfg.data.crop, cfg.synth, cfg.preprocess)
    stream = PairStream(gen, cfg.batch_size, cfg.seed, start)
    if cfg.data.workers > 0:
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=cfg.data.workers, persistent_workers=True
        )
        batches = iter(loader)
    else:
        batches = iter(stream)
    sampler_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start)

    last_path = out / "last.pt"
    best_path = out / "best.pt" if val_pairs else None
    last_good: Path | None = last_path if resume is not None or last_path.exists() else None
    loss_log = _CsvLog(
        out / "log.csv",
        ["step", "lr", "loss", *LOSS_NAMES, "ap_mean", "rel_mean", "sec_per_step"],
    )
    thresholds = [float(t) for t in cfg.val.thresholds]
    val_cols = ["step", *[f"mma{t:g}" for t in thresholds], "matches", "correct", "keypoints"]
    val_log = _CsvLog(out / "val.csv", val_cols)
    tb = _tensorboard(out)
    history: list[dict[str, float]] = []
    run = {k: 0.0 for k in ("loss", *LOSS_NAMES, "ap_mean", "rel_mean")}
    n_run = 0
    step_times: list[float] = []
    step = start
    interactive = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=end,
        initial=start,
        disable=not interactive,
        dynamic_ncols=True,
        mininterval=1.0,
        desc="train",
    )
    logger.info(
        "training %s on %s for steps %d..%d (batch %d, crop %d, %d threads)",
        _arch_text(net.config),
        device,
        start,
        end,
        cfg.batch_size,
        cfg.data.crop,
        torch.get_num_threads(),
    )

    def save_last() -> Path:
        nonlocal last_good
        _check_weights(net, step, last_good)
        training = {
            "step": step,
            "optimizer": opt.state_dict(),
            "best": dict(best),
            "torch_rng": torch.get_rng_state(),
            "config": cfg.to_dict(),
        }
        save_checkpoint(
            last_path,
            net,
            meta=_meta(cfg, step, val_files, {"last_val": history[-1] if history else None}),
            preprocess=cfg.preprocess,
            training=training,
        )
        last_good = last_path
        return last_path

    def refit_whitening() -> None:
        fit = whiten.refit(net, whiten_pairs, cfg, device=device)
        logger.info(
            "descriptor whitening %s on %d matching keypoint pairs of %d training pairs",
            "fitted" if fit.fitted else "NOT fitted",
            fit.pairs,
            len(whiten_pairs),
        )

    def validate() -> None:
        res: ValResult = evaluate_pairs(
            net, val_pairs, cfg.val.max_keypoints, thresholds, device=device
        )
        row = {"step": step, **res.as_row()}
        history.append(row)
        val_log.write(row)
        if tb is not None:
            for k, v in res.as_row().items():
                tb.add_scalar(f"val/{k}", v, step)
        mma3 = res.mma.get(3.0, next(iter(res.mma.values())))
        logger.info(
            "val step %d: %s, %.0f matches, %.0f correct@3, %.0f keypoints",
            step,
            ", ".join(f"MMA@{t:g} {v:.3f}" for t, v in res.mma.items()),
            res.matches,
            res.correct,
            res.keypoints,
        )
        if best_path is not None and (best["mma3"] is None or mma3 > best["mma3"]):
            best.update(mma3=float(mma3), step=step)
            save_checkpoint(
                best_path,
                net,
                meta=_meta(cfg, step, val_files, {"val": row}),
                preprocess=cfg.preprocess,
            )

    if cfg.loss.whitened and whiten_pairs and not net.whitening.active:
        refit_whitening()
    try:
        while step < end:
            t0 = time.perf_counter()
            lr = cfg.optim.lr * lr_factor(step, cfg.steps, cfg.optim)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = next(batches).to(device)
            # the sampling of step k depends on k alone, so that a resumed run equals the
            # uninterrupted one
            sampler_gen.manual_seed(cfg.seed * 1_000_003 + step)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                outputs = train_forward(net, batch.image1, batch.image2)
            total, parts = compute_losses(
                outputs,
                batch,
                cfg.loss,
                cfg.sampler,
                sampler_gen,
                train_reliability=step >= cfg.loss.reliability_warmup,
                project=net.whitening if cfg.loss.whitened and net.whitening.active else None,
            )
            for name in LOSS_NAMES:
                value = float(parts[name].detach())
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the {name} loss is {value} at step {step + 1}",
                        f"training stopped; the last good checkpoint is {last_good or 'none'}; "
                        "lower --lr or check the data, then resume from it",
                    )
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if cfg.optim.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
            try:
                scaler.step(opt)
            except RuntimeError as err:  # e.g. --lr 1e38: the update overflows float32
                raise TrainingError(
                    f"the optimizer step failed at step {step + 1} ({err}) with lr {lr:g}",
                    "lower --lr (e.g. 1e-4)",
                ) from err
            scaler.update()
            step += 1
            step_times.append(time.perf_counter() - t0)

            run["loss"] += float(total.detach())
            for k in (*LOSS_NAMES, "ap_mean", "rel_mean"):
                run[k] += float(parts[k].detach())
            n_run += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                avg = {k: v / n_run for k, v in run.items()}
                sec = float(np.mean(step_times[-cfg.log_every :]))
                loss_log.write({"step": step, "lr": lr, **avg, "sec_per_step": sec})
                bar.set_postfix(loss=f"{avg['loss']:.3f}", ap=f"{avg['ap_mean']:.3f}")
                logger.info(
                    "step %d lr %.2e loss %.4f (cosim %.4f peaky %.4f ap %.4f) AP %.3f "
                    "rel %.3f %.2f s/step",
                    step,
                    lr,
                    avg["loss"],
                    avg["cosim"],
                    avg["peaky"],
                    avg["ap"],
                    avg["ap_mean"],
                    avg["rel_mean"],
                    sec,
                )
                if tb is not None:
                    for k, v in avg.items():
                        tb.add_scalar(f"train/{k}", v, step)
                run = dict.fromkeys(run, 0.0)
                n_run = 0
            validating = bool(val_pairs) and (
                (cfg.val.every > 0 and step % cfg.val.every == 0) or step == end
            )
            # the whitening is refitted for each validation (and at the end without one),
            # so that validation, best.pt and last.pt use descriptors as inference will
            if whiten_pairs and (validating or (not val_pairs and step == end)):
                refit_whitening()
            if validating:
                validate()
            if step % cfg.checkpoint_every == 0 or step == end:
                save_last()
    except KeyboardInterrupt:
        if step > start:
            save_last()
            logger.warning(
                "interrupted at step %d; saved %s (resume with --resume)", step, last_path
            )
        raise
    finally:
        bar.close()
        if tb is not None:
            tb.close()
    sec = float(np.mean(step_times)) if step_times else float("nan")
    logger.info("done: %d steps, %.3f s/step, last %s, best %s", step, sec, last_path, best_path)
    return TrainResult(
        step=step,
        last=last_path,
        best=best_path,
        best_mma=best["mma3"],
        seconds_per_step=sec,
        val_history=history,
    )
