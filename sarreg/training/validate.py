"""Validation: mean matching accuracy (MMA) on fixed held-out pairs with known transforms.

Keypoints and descriptors come from the inference path, ``sarreg.features.extract`` at one
scale: the 3x3 local maxima of the repeatability map inside the image's valid content (eroded
by 4 px) and 8 px from the edge, ranked by reliability, the top ``max_keypoints`` kept.
Matches come from ``sarreg.matching.matched_points`` without a similarity floor: mutual
nearest neighbours on the image-2 local descriptors, with the image-2 keypoints refined as
``sarreg register`` refines the moving ones; a match is correct at threshold
``t`` when the image-1 keypoint mapped by the ground-truth transform lies within ``t`` pixels
of its image-2 match. MMA@t is the fraction of correct matches, averaged over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import torch

from sarreg.evaluation.metrics import match_errors, mma_curve
from sarreg.features import ExtractConfig, extract
from sarreg.matching import MatchConfig, matched_points
from sarreg.training.synth import SynthPair, apply_homography


@dataclass
class ValResult:
    """Validation metrics averaged over pairs.

    Attributes:
        mma: ``{threshold: mean matching accuracy}``.
        matches: mean number of mutual matches per pair.
        correct: mean number of matches within the middle threshold (3 px by default).
        keypoints: mean keypoints per image.
    """

    mma: dict[float, float]
    matches: float
    correct: float
    keypoints: float

    def as_row(self) -> dict[str, float]:
        row = {f"mma{t:g}": v for t, v in self.mma.items()}
        row.update(matches=self.matches, correct=self.correct, keypoints=self.keypoints)
        return row


def keypoint_mask(mask: np.ndarray, margin: int = 4) -> np.ndarray:
    """``(H, W)`` bool: ``mask`` (True = valid content) eroded by ``margin`` pixels."""
    ok = np.asarray(mask, dtype=np.uint8)
    if margin > 0:
        ok = cv2.erode(ok, np.ones((2 * margin + 1,) * 2, np.uint8), borderValue=1)
    return ok.astype(bool)


def extract_config(max_keypoints: int, device: torch.device | str = "cpu") -> ExtractConfig:
    """The validation detector: ``sarreg.features.extract`` at one scale, ``max_keypoints``
    (ranked by reliability, with the neighbourhood descriptors for match refinement and the
    context descriptors, as ``sarreg register`` extracts)."""
    return ExtractConfig(
        scales=(1.0,), top_k=max_keypoints, border=8, device=str(device), progress=False
    )


def pair_features(net: torch.nn.Module, pair: SynthPair, xcfg: ExtractConfig):
    """``(Features of image 1, Features of image 2)`` of ``pair`` by ``extract`` with
    ``xcfg``, keypoints inside each image's valid content eroded by 4 px."""
    return tuple(
        extract(net, img, keypoint_mask(mask), xcfg)
        for img, mask in ((pair.image1, pair.mask1), (pair.image2, pair.mask2))
    )


@torch.no_grad()
def evaluate_pairs(
    net: torch.nn.Module,
    pairs: Sequence[SynthPair],
    max_keypoints: int = 2000,
    thresholds: Sequence[float] = (1.0, 3.0, 5.0),
    device: torch.device | str = "cpu",
) -> ValResult:
    """MMA of ``net`` on ``pairs``; the network's train/eval mode is restored afterwards."""
    was_training = net.training
    xcfg = extract_config(max_keypoints, device)
    try:
        accs = {float(t): [] for t in thresholds}
        n_matches, n_correct, n_kp = [], [], []
        mid = float(sorted(thresholds)[len(thresholds) // 2])
        for pair in pairs:
            f1, f2 = pair_features(net, pair, xcfg)
            n_kp.append(0.5 * (len(f1) + len(f2)))
            _, xy1, xy2 = matched_points(f1, f2, MatchConfig(min_similarity=-1.0))
            n_matches.append(len(xy1))
            # image 2 plays the reference: the ground truth maps image-1 points onto it
            gt = partial(apply_homography, pair.homography)
            err = match_errors(xy2, xy1, gt)
            for t, v in zip(accs, mma_curve(err, list(accs)), strict=True):
                accs[t].append(float(v))
            n_correct.append(int(np.sum(err <= mid)))
        return ValResult(
            mma={t: float(np.mean(v)) if v else 0.0 for t, v in accs.items()},
            matches=float(np.mean(n_matches)) if n_matches else 0.0,
            correct=float(np.mean(n_correct)) if n_correct else 0.0,
            keypoints=float(np.mean(n_kp)) if n_kp else 0.0,
        )
    finally:
        net.train(was_training)
