"""Fit the descriptor whitening of a checkpoint, as ``sarreg train`` does at each validation.

Uses the config's ``whiten`` settings and training data (the validation files held out), then
validates on the config's held-out pairs with and without the whitening and writes the
checkpoint with it (atomically; the training state is dropped). Step 5 of the shipped model's
recipe (``training/reproduce.py``).

    python training/fit_whitening.py runs/looks14_3k/best.pt --out runs/looks14_3k/white.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

log = logging.getLogger("fit_whitening")


def fit_checkpoint(checkpoint, out, config: str | Path = "fast_r2d2_sar", overrides=None) -> dict:
    """Fit the whitening of ``checkpoint`` and write it with the whitening to ``out``.

    Args:
        checkpoint: sarreg checkpoint (``best.pt`` / ``last.pt`` of a run).
        out: checkpoint to write.
        config: preset name or YAML file whose ``whiten`` settings, training data and held-out
            pairs are used; ``overrides``: dotted-key settings on top (as ``--set``).

    Returns:
        ``{"pairs": matching keypoint pairs, "rows": {label: validation row}}``; the rows are
        the held-out validation without and with the whitening (empty without validation data).

    Raises:
        TrainingError: too few matching keypoint pairs to fit the whitening.
    """
    from sarreg.errors import TrainingError
    from sarreg.model.checkpoint import load_checkpoint, save_checkpoint
    from sarreg.training.config import load_config
    from sarreg.training.loop import load_data
    from sarreg.training.validate import evaluate_pairs
    from sarreg.training.whiten import refit, whitening_pairs

    cfg = load_config(config, overrides)
    if cfg.whiten.pairs < 1:
        cfg = dataclasses.replace(cfg, whiten=dataclasses.replace(cfg.whiten, pairs=256))
    ck = load_checkpoint(checkpoint)
    net = ck.net
    train_sources, val_pairs, _ = load_data(cfg)
    thresholds = [float(t) for t in cfg.val.thresholds]
    w = cfg.whiten
    net.whitening.reset()
    results = {}
    if val_pairs:
        results["without whitening"] = evaluate_pairs(
            net, val_pairs, cfg.val.max_keypoints, thresholds
        )
    fit = refit(net, whitening_pairs(train_sources, cfg), cfg)
    if not fit.fitted:
        raise TrainingError(
            f"whitening not fitted ({fit.pairs} matching keypoint pairs)",
            "use a better-trained checkpoint or more whiten.pairs",
        )
    log.info("fitted on %d matching keypoint pairs of %d training pairs", fit.pairs, w.pairs)
    if val_pairs:
        results["with whitening"] = evaluate_pairs(
            net, val_pairs, cfg.val.max_keypoints, thresholds
        )
    for label, res in results.items():
        mma = ", ".join(f"MMA@{t:g} {v:.3f}" for t, v in res.mma.items())
        log.info("%s: %s, %.0f matches/pair (%d pairs)", label, mma, res.matches, len(val_pairs))
    meta = dict(ck.meta or {})
    meta["whitening"] = {**dataclasses.asdict(w), "matching_keypoint_pairs": fit.pairs}
    if "with whitening" in results:
        meta["val_whitened"] = {"pairs": len(val_pairs), **results["with whitening"].as_row()}
    save_checkpoint(out, net, meta=meta, preprocess=ck.preprocess)
    log.info("wrote %s", out)
    return {"pairs": fit.pairs, "rows": {k: v.as_row() for k, v in results.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--config", default="fast_r2d2_sar")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    from sarreg.errors import SarregError

    try:
        fit_checkpoint(opts.checkpoint, opts.out, opts.config)
    except SarregError as err:
        log.error("%s", err)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
