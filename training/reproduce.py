"""Reproduce sarreg's shipped model (``sarreg/weights/fast_r2d2_sar.pt``) with one command.

Runs the recipe of the model card (``sarreg/weights/README.md``), from scratch:

1. 500 steps of the ``fast_r2d2_sar`` preset on a 2000-step schedule (stopped at 500, as the
   original run was), lr 5e-4;
2. 1500 more from segment 1's ``last.pt`` (fresh optimizer, 2000-step schedule stopped at
   1500), lr 5e-4, no reliability warm-up; its ``best.pt`` goes on;
3. 750 steps on the validation speckle range (L = 1..4), lr 2e-4, from segment 2's ``best.pt``;
4. 3000 steps at lr 1e-4, cosine to 5 %, from segment 3's ``last.pt``;
5. the descriptor whitening fitted on segment 4's ``best.pt`` (``fit_whitening.py``);
6. packaging (licence and data attribution in the metadata; ``package_model.py``);
7. validation on the preset's held-out pairs (``eval_heldout.py``), for the new model and the
   shipped one on the same pairs, written as the model card's table.

Outputs in ``--out`` (default ``runs/reproduce``): one folder per segment (a ``sarreg train``
run each), ``white.pt``, ``fast_r2d2_sar.pt`` (the packaged model; the shipped weights are not
touched), ``model_card_table.md`` and ``summary.json`` (figures and wall times). Running the
command again continues: finished segments are skipped, an interrupted one resumes from its
``last.pt``.

    python training/reproduce.py                   # CPU, hours (see the model card)
    python training/reproduce.py --device cuda     # one GPU
    python training/reproduce.py --smoke           # a step or two per stage on the bundled data
    python training/reproduce.py --dry-run         # print the recipe as commands
    make model                                     # the same as the first line
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
log = logging.getLogger("reproduce")

#: Settings every segment after the first shares (model card, "Training history").
_LOOKS14 = {"synth.looks": [1, 4], "loss.reliability_warmup": 0, "optim.warmup_steps": 50}


@dataclass(frozen=True)
class Segment:
    """One ``sarreg train`` run of the recipe.

    Attributes:
        name: folder of the run under ``--out``.
        steps: schedule length (``--steps``); ``stop_at``: step the run stops at (0 = steps).
        lr: learning rate (``--lr``).
        init: ``(segment name, "last" | "best")`` whose checkpoint starts the run, or None.
        overrides: ``--set`` settings.
    """

    name: str
    steps: int
    lr: float
    stop_at: int = 0
    init: tuple[str, str] | None = None
    overrides: dict = field(default_factory=dict)


SEGMENTS = (
    Segment("1_scratch", 2000, 5e-4, stop_at=500, overrides={"loss.w_ap_plain": 1}),
    Segment(
        "2_continue", 2000, 5e-4, stop_at=1500, init=("1_scratch", "last"),
        overrides={"loss.w_ap_plain": 1, "loss.reliability_warmup": 0},
    ),
    Segment("3_looks14", 750, 2e-4, init=("2_continue", "best"), overrides=_LOOKS14),
    Segment("4_looks14_3k", 3000, 1e-4, init=("3_looks14", "last"), overrides=_LOOKS14),
)  # fmt: skip


def smoke_segments() -> tuple[Segment, ...]:
    """The same four segments cut to a step or two each (the ``smoke`` preset's scale)."""
    cut = []
    for seg in SEGMENTS:
        steps, stop = (2, 1) if seg.stop_at else (1, 0)
        cut.append(Segment(seg.name, steps, seg.lr, stop, seg.init, dict(seg.overrides)))
    return tuple(cut)


def _segment_config(seg: Segment, preset: str, out: Path, common: dict):
    from sarreg.training.config import check_data_paths, load_config

    values = {**seg.overrides, **common, "steps": seg.steps, "stop_at": seg.stop_at}
    values.update({"optim.lr": seg.lr, "out": str(out / seg.name)})
    return check_data_paths(load_config(preset, values), data_given=False, val_given=False)


def run_segment(seg: Segment, preset: str, out: Path, common: dict) -> dict:
    """Train one segment (or skip it when done, resume it when interrupted); its figures."""
    from sarreg.training.loop import train

    folder = out / seg.name
    done = folder / "done.json"
    if done.exists():
        log.info("segment %s: done before, skipped", seg.name)
        return json.loads(done.read_text())
    cfg = _segment_config(seg, preset, out, common)
    init = None
    if seg.init is not None:
        init = out / seg.init[0] / f"{seg.init[1]}.pt"
        if not init.exists():  # a segment without validation has no best.pt
            init = out / seg.init[0] / "last.pt"
    resume = folder / "last.pt" if (folder / "last.pt").exists() else None
    log.info("segment %s: %d steps (schedule %d), lr %g, from %s", seg.name,
             seg.stop_at or seg.steps, seg.steps, seg.lr, init or "scratch")  # fmt: skip
    t0 = time.perf_counter()
    result = train(cfg, resume=resume, init=None if resume else init, progress=False)
    figures = {
        "segment": seg.name,
        "steps": result.step,
        "seconds_per_step": round(result.seconds_per_step, 4),
        "wall_s": round(time.perf_counter() - t0, 1),
        "best_mma3": result.best_mma,
        "device": cfg.device,
    }
    done.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def reproduce(opts: argparse.Namespace) -> dict:
    """Run the whole recipe; returns the summary written to ``summary.json``."""
    sys.path.insert(0, str(HERE))
    import eval_heldout
    import fit_whitening
    import package_model

    from sarreg.model.checkpoint import load_checkpoint, load_default_model
    from sarreg.training.config import parse_override

    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    preset = opts.config or ("smoke" if opts.smoke else "fast_r2d2_sar")
    segments = smoke_segments() if opts.smoke else SEGMENTS
    common = dict(parse_override(s) for s in opts.set or [])
    if opts.device:
        common["device"] = opts.device
    if opts.threads is not None:
        common["threads"] = opts.threads
    if opts.smoke:
        common.update({"val.every": 1, "checkpoint_every": 1, "whiten.pairs": 8})
    if opts.dry_run:
        for line in plan(segments, preset, out, common):
            print(line)
        return {}
    t_start = time.perf_counter()
    summary: dict = {"preset": preset, "smoke": bool(opts.smoke), "segments": []}
    for seg in segments:
        summary["segments"].append(run_segment(seg, preset, out, common))

    last = out / segments[-1].name
    best = last / "best.pt" if (last / "best.pt").exists() else last / "last.pt"
    t0 = time.perf_counter()
    white = out / "white.pt"
    eval_overrides = {k: v for k, v in common.items() if k not in ("device",)}
    fit = fit_whitening.fit_checkpoint(best, white, preset, eval_overrides)
    summary["whitening"] = {**fit, "wall_s": round(time.perf_counter() - t0, 1)}

    model = out / "fast_r2d2_sar.pt"
    note = "training/reproduce.py: " + ", ".join(
        f"{s['segment']} {s['steps']} steps" for s in summary["segments"]
    )
    package_model.package(white, model, note)

    t0 = time.perf_counter()
    pairs, seed = eval_heldout.heldout_pairs(preset, overrides=eval_overrides)
    keypoints = opts.keypoints or (200 if opts.smoke else 2000)
    full = not opts.smoke
    rows = eval_heldout.heldout_rows(load_checkpoint(model).net, pairs, keypoints, full)
    shipped = eval_heldout.heldout_rows(load_default_model().net, pairs, keypoints, full)
    summary["validation"] = {
        "pairs": len(pairs), "seed": seed, "keypoints": keypoints,
        "wall_s": round(time.perf_counter() - t0, 1),
        "reproduced": {name: {"mma": mma, "matches": n} for name, mma, n in rows},
        "shipped": {name: {"mma": mma, "matches": n} for name, mma, n in shipped},
    }  # fmt: skip
    summary["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / "model_card_table.md").write_text(_card(summary, rows, shipped, eval_heldout))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def plan(segments, preset: str, out: Path, common: dict) -> list[str]:
    """The recipe as the equivalent shell commands (``--dry-run``)."""

    def sets(values: dict) -> str:
        return "".join(f" --set {k}={json.dumps(v).replace(' ', '')}" for k, v in values.items())

    lines = []
    for seg in segments:
        init = ""
        if seg.init:
            init = f" --init {out / seg.init[0] / (seg.init[1] + '.pt')}"
        stop = {"stop_at": seg.stop_at} if seg.stop_at else {}
        lines.append(
            f"sarreg train --config {preset} --out {out / seg.name} --steps {seg.steps} "
            f"--lr {seg.lr:g}{init}{sets({**seg.overrides, **stop, **common})}"
        )
    last = out / segments[-1].name / "best.pt"
    lines.append(f"python training/fit_whitening.py {last} --out {out / 'white.pt'} "
                 f"--config {preset}")  # fmt: skip
    lines.append(f"python training/package_model.py {out / 'white.pt'} "
                 f"--out {out / 'fast_r2d2_sar.pt'}")  # fmt: skip
    lines.append(f"python training/eval_heldout.py {out / 'fast_r2d2_sar.pt'} --config {preset}")
    lines.append(f"python training/eval_heldout.py --config {preset}   # the shipped model")
    return lines


def _card(summary: dict, rows, shipped, eval_heldout) -> str:
    v = summary["validation"]
    text = [
        f"# Reproduced model: {summary['preset']} recipe"
        + (" (smoke: a few steps per stage)" if summary["smoke"] else ""),
        "",
        f"Held-out validation: {v['pairs']} pairs (seed {v['seed']}), {v['keypoints']} "
        "keypoints per image (`training/eval_heldout.py`).",
        "",
        "## Reproduced model (`fast_r2d2_sar.pt` of this folder)",
        "",
        eval_heldout.markdown_table(rows),
        "## Shipped model (`sarreg/weights/fast_r2d2_sar.pt`), same pairs",
        "",
        eval_heldout.markdown_table(shipped),
        "## Wall time",
        "",
        "| stage | steps | s/step | wall (s) | best val MMA@3 |",
        "|---|---|---|---|---|",
    ]
    for s in summary["segments"]:
        best = "" if s["best_mma3"] is None else f"{s['best_mma3']:.3f}"
        text.append(
            f"| {s['segment']} ({s['device']}) | {s['steps']} | {s['seconds_per_step']:.3f} | "
            f"{s['wall_s']:.0f} | {best} |"
        )
    text.append(f"| whitening fit | | | {summary['whitening']['wall_s']:.0f} | |")
    text.append(f"| validation (both models) | | | {v['wall_s']:.0f} | |")
    text.append(f"| total | | | {summary['total_wall_s']:.0f} | |")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/reproduce", help="output folder")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for training")
    parser.add_argument(
        "--smoke", action="store_true", help="a few steps per stage on the bundled data (CI)"
    )
    parser.add_argument("--config", default=None, help="preset or YAML (default fast_r2d2_sar)")
    parser.add_argument("--keypoints", type=int, default=None, help="validation keypoints")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the recipe as commands, run nothing"
    )
    parser.add_argument(
        "--set", action="append", help="KEY=VALUE setting for every stage (as sarreg train)"
    )
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from sarreg.errors import SarregError

    try:
        summary = reproduce(opts)
    except SarregError as err:
        log.error("%s", err)
        return err.exit_code
    if opts.dry_run:
        return 0
    out = Path(opts.out).resolve()
    print((out / "model_card_table.md").read_text())
    print(f"wrote {out / 'fast_r2d2_sar.pt'} in {summary['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
