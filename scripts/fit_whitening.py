"""Fit the descriptor whitening of a checkpoint, as ``sarreg train`` does at each validation.

Uses the config's ``whiten`` settings and training data (the validation files held out), then
validates on the config's held-out pairs with and without the whitening and writes the
checkpoint with it (atomically; the training state is dropped).

    python scripts/fit_whitening.py runs/looks14_3k/best.pt --out runs/looks14_3k/white.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--config", default="fast_r2d2_sar")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log = logging.getLogger("fit_whitening")
    log.setLevel(logging.INFO)

    from sarreg.model.checkpoint import load_checkpoint, save_checkpoint
    from sarreg.training.config import load_config
    from sarreg.training.loop import load_data
    from sarreg.training.validate import evaluate_pairs
    from sarreg.training.whiten import refit, whitening_pairs

    cfg = load_config(opts.config)
    if cfg.whiten.pairs < 1:
        cfg = dataclasses.replace(cfg, whiten=dataclasses.replace(cfg.whiten, pairs=256))
    ck = load_checkpoint(opts.checkpoint)
    net = ck.net
    train_sources, val_pairs, _ = load_data(cfg)
    thresholds = [float(t) for t in cfg.val.thresholds]
    w = cfg.whiten
    net.whitening.reset()
    rows = {}
    if val_pairs:
        rows["without whitening"] = evaluate_pairs(
            net, val_pairs, cfg.val.max_keypoints, thresholds
        )
    fit = refit(net, whitening_pairs(train_sources, cfg), cfg)
    if not fit.fitted:
        log.error("whitening not fitted (%d matching keypoint pairs)", fit.pairs)
        return 1
    log.info("fitted on %d matching keypoint pairs of %d training pairs", fit.pairs, w.pairs)
    if val_pairs:
        rows["with whitening"] = evaluate_pairs(net, val_pairs, cfg.val.max_keypoints, thresholds)
    for label, res in rows.items():
        mma = ", ".join(f"MMA@{t:g} {v:.3f}" for t, v in res.mma.items())
        log.info("%s: %s, %.0f matches/pair (%d pairs)", label, mma, res.matches, len(val_pairs))
    meta = dict(ck.meta or {})
    meta["whitening"] = {**dataclasses.asdict(w), "matching_keypoint_pairs": fit.pairs}
    if "with whitening" in rows:
        meta["val_whitened"] = {"pairs": len(val_pairs), **rows["with whitening"].as_row()}
    save_checkpoint(opts.out, net, meta=meta, preprocess=ck.preprocess)
    log.info("wrote %s", opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
