"""MMA on the held-out validation pairs of a training config, for a checkpoint and for SIFT.

The pairs are the config's fixed validation set (for ``fast_r2d2_sar``: 512 x 512 crops of
held-out Sentinel-1 tiles, rotation up to 15 deg, scale 0.8..1.25, own speckle smoothed and
independent L = 1..4 speckle on each side). Both methods keep 2000 keypoints per image and
match by mutual nearest neighbours; a match is correct at t px when the ground truth puts it
within t px.

    python training/eval_heldout.py runs/ship/best.pt --pairs 16   # the first 16 of them
    python training/eval_heldout.py --pairs 48 --seed 2027      # a fresh draw, same conditions

The validation step of the shipped model's recipe (``training/reproduce.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np


def _pair_mma(pair, xy1: np.ndarray, xy2: np.ndarray, thresholds) -> np.ndarray:
    """MMA curve ``(T,)`` of one pair's matches ``xy1[i] <-> xy2[i]`` (image 1 -> image 2)."""
    from functools import partial

    from sarreg.evaluation.metrics import match_errors, mma_curve
    from sarreg.training.synth import apply_homography

    err = match_errors(xy2, xy1, partial(apply_homography, pair.homography))
    return mma_curve(err, thresholds)


def sift_mma(pairs, max_keypoints: int, thresholds) -> tuple[dict, float]:
    """MMA of OpenCV SIFT + mutual nearest neighbours on the same preprocessed images."""
    import cv2

    sift = cv2.SIFT_create(nfeatures=max_keypoints)
    accs = {t: [] for t in thresholds}
    n_matches = []
    for pair in pairs:
        feats = []
        for img, mask in ((pair.image1, pair.mask1), (pair.image2, pair.mask2)):
            u8 = np.clip(img * 255.0, 0, 255).astype(np.uint8)
            kps, desc = sift.detectAndCompute(u8, mask.astype(np.uint8) * 255)
            xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
            feats.append((xy, desc))
        (xy1, d1), (xy2, d2) = feats
        if d1 is None or d2 is None or len(xy1) == 0 or len(xy2) == 0:
            for t in accs:
                accs[t].append(0.0)
            n_matches.append(0)
            continue
        m = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
        i1 = np.array([x.queryIdx for x in m])
        i2 = np.array([x.trainIdx for x in m])
        n_matches.append(len(m))
        for t, v in zip(accs, _pair_mma(pair, xy1[i1], xy2[i2], thresholds), strict=True):
            accs[t].append(float(v))
    return {t: float(np.mean(v)) for t, v in accs.items()}, float(np.mean(n_matches))


def sarreg_mma(
    net, pairs, max_keypoints: int, thresholds, match_options=None, **extract_options
) -> tuple[dict, float]:
    """MMA through the shipped inference path (``sarreg.features.extract`` +
    ``sarreg.matching.matched_points``)."""
    from sarreg.features import ExtractConfig, extract
    from sarreg.matching import MatchConfig, matched_points

    cfg = ExtractConfig(top_k=max_keypoints, progress=False, **extract_options)
    match_options = match_options or {}
    accs = {t: [] for t in thresholds}
    n_matches = []
    for pair in pairs:
        f1 = extract(net, pair.image1, pair.mask1, cfg)
        f2 = extract(net, pair.image2, pair.mask2, cfg)
        _, xy1, xy2 = matched_points(f1, f2, MatchConfig(min_similarity=-1.0, **match_options))
        n_matches.append(len(xy1))
        for t, v in zip(accs, _pair_mma(pair, xy1, xy2, thresholds), strict=True):
            accs[t].append(float(v))
    return {t: float(np.mean(v)) for t, v in accs.items()}, float(np.mean(n_matches))


THRESHOLDS = (1.0, 3.0, 5.0, 10.0)
VALIDATION_ROW = (
    "sarreg: rank by reliability, local-descriptor mutual NN + refinement, 1 scale "
    "(training's validation)"
)


def heldout_pairs(config="fast_r2d2_sar", pairs=None, seed=None, overrides=None):
    """The config's held-out validation pairs (``pairs``/``seed`` replace its own)."""
    from sarreg.training.config import load_config
    from sarreg.training.loop import load_data

    cfg = load_config(config, overrides)
    seed = cfg.val.seed if seed is None else seed
    n_pairs = cfg.val.pairs if pairs is None else pairs
    cfg = dataclasses.replace(cfg, val=dataclasses.replace(cfg.val, pairs=n_pairs, seed=seed))
    return load_data(cfg)[1], seed


def heldout_rows(net, pairs, keypoints: int = 2000, full: bool = True) -> list[tuple]:
    """``(label, {threshold: MMA}, matches per pair)`` rows of the model card's table.

    ``full``: every variant and SIFT; else the training's validation path only (with and
    without context descriptors).
    """
    thresholds = THRESHOLDS
    rows = []
    plain = {"local_radius": 0}
    variants = [  # (label, ExtractConfig options, MatchConfig options)
        ("R2D2 selection (rank by reliability x repeatability), plain mutual NN, 1 scale",
         {"rank": "score", "refine_radius": 0, "scales": (1.0,)}, plain),
        ("rank by reliability, plain mutual NN, 1 scale",
         {"refine_radius": 0, "scales": (1.0,)}, plain),
        ("rank by reliability, plain mutual NN + refinement, 1 scale", {"scales": (1.0,)}, plain),
        ("rank by reliability, local-descriptor mutual NN + refinement, 1 scale "
         "(training's validation)", {"scales": (1.0,)}, {}),
        ("rank by reliability, local-descriptor mutual NN + refinement, default pyramid "
         "1..0.5 (register's defaults)", {}, {}),
    ]  # fmt: skip
    if not full:
        variants = variants[3:4]
    mma, n = sarreg_mma(net, pairs, keypoints, thresholds, {}, scales=(1.0,), context_scale=None)
    rows.append(("sarreg: training's validation path WITHOUT context descriptors", mma, n))
    if full and net.whitening.active:  # the shipped path without the descriptor whitening
        saved = {k: v.clone() for k, v in net.whitening.state_dict().items()}
        net.whitening.reset()
        mma, n = sarreg_mma(net, pairs, keypoints, thresholds, {}, scales=(1.0,))
        rows.append(("sarreg: training's validation path WITHOUT descriptor whitening", mma, n))
        net.whitening.load_state_dict(saved)
    for label, xkw, mkw in variants:
        mma, n = sarreg_mma(net, pairs, keypoints, thresholds, mkw, **xkw)
        rows.append((f"sarreg: {label}", mma, n))
    if full:
        sift, sift_matches = sift_mma(pairs, keypoints, thresholds)
        rows.append(("SIFT (OpenCV) + mutual NN", sift, sift_matches))
    return rows


def markdown_table(rows, thresholds=THRESHOLDS) -> str:
    """The rows as the model card's markdown table."""
    head = "| method | " + " | ".join(f"MMA@{t:g}" for t in thresholds) + " | matches/pair |"
    lines = [head, "|---" * (len(thresholds) + 2) + "|"]
    for name, mma, n in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{mma[t]:.3f}" for t in thresholds) + f" | {n:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=None, help="default: bundled model")
    parser.add_argument("--config", default="fast_r2d2_sar")
    parser.add_argument(
        "--pairs", type=int, default=None, help="number of pairs (default: the config's val.pairs)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the pairs (default: the config's val.seed)"
    )
    parser.add_argument("--keypoints", type=int, default=2000)
    opts = parser.parse_args()

    from sarreg.model.checkpoint import load_checkpoint, load_default_model

    pairs, seed = heldout_pairs(opts.config, opts.pairs, opts.seed)
    ck = load_default_model() if opts.checkpoint is None else load_checkpoint(opts.checkpoint)
    rows = heldout_rows(ck.net, pairs, opts.keypoints)
    print(
        f"\n{len(pairs)} held-out pairs ({opts.config} validation conditions, seed {seed}), "
        f"{opts.keypoints} keypoints per image, mutual nearest neighbours\n"
    )
    print(f"model: {opts.checkpoint or 'bundled model'}\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
