"""Validation: mean matching accuracy (MMA) on fixed held-out pairs with known transforms.

For each pair, keypoints are the local maxima (3x3) of the repeatability map, inside the
image's valid content (eroded by ``margin``) and ``border`` pixels from the edge, ranked by
reliability x repeatability; the top ``max_keypoints`` are kept. Descriptors come from the
inference path (``R2D2Net.dense_maps`` / ``descriptors_at``). Matches are mutual nearest
neighbours by cosine similarity; a match is correct at threshold ``t`` when the image-1
keypoint mapped by the ground-truth transform lies within ``t`` pixels of its image-2 match.
MMA@t is the fraction of correct matches, averaged over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

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


def detect(
    repeatability: np.ndarray,
    reliability: np.ndarray,
    mask: np.ndarray,
    max_keypoints: int,
    border: int = 8,
    margin: int = 4,
) -> np.ndarray:
    """Top keypoints ``(N, 2)`` (x, y) from score maps ``(H, W)`` (see module docstring)."""
    rep = torch.from_numpy(np.ascontiguousarray(repeatability, dtype=np.float32))[None, None]
    is_max = (F.max_pool2d(rep, 3, stride=1, padding=1) == rep)[0, 0].numpy()
    ok = mask.astype(np.uint8)
    if margin > 0:
        ok = cv2.erode(ok, np.ones((2 * margin + 1,) * 2, np.uint8), borderValue=1)
    ok = ok.astype(bool)
    if border > 0:
        ok[:border] = ok[-border:] = False
        ok[:, :border] = ok[:, -border:] = False
    score = np.where(is_max & ok, repeatability * reliability, -1.0)
    flat = score.ravel()
    n = int(min(max_keypoints, int((flat > 0).sum())))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    idx = np.argpartition(-flat, n - 1)[:n]
    idx = idx[np.argsort(-flat[idx])]
    ys, xs = np.unravel_index(idx, score.shape)
    return np.stack([xs, ys], axis=1).astype(np.float32)


def mutual_nn(d1: torch.Tensor, d2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of unit descriptors ``(N1, D)``, ``(N2, D)`` -> index arrays."""
    if d1.shape[0] == 0 or d2.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = d1 @ d2.t()
    nn12 = sim.argmax(1)
    nn21 = sim.argmax(0)
    i1 = torch.arange(d1.shape[0])
    keep = nn21[nn12] == i1
    return i1[keep].numpy(), nn12[keep].numpy()


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
    net.eval()
    try:
        accs = {float(t): [] for t in thresholds}
        n_matches, n_correct, n_kp = [], [], []
        mid = float(sorted(thresholds)[len(thresholds) // 2])
        for pair in pairs:
            feats = []
            for img, mask in ((pair.image1, pair.mask1), (pair.image2, pair.mask2)):
                x = torch.from_numpy(img)[None, None].to(device)
                maps = net.dense_maps(x)
                rep = maps.repeatability[0, 0].float().cpu().numpy()
                rel = maps.reliability[0, 0].float().cpu().numpy()
                kp = detect(rep, rel, mask, max_keypoints)
                desc = net.descriptors_at(maps, kp).float().cpu()
                feats.append((kp, desc))
            (kp1, d1), (kp2, d2) = feats
            n_kp.append(0.5 * (len(kp1) + len(kp2)))
            i1, i2 = mutual_nn(d1, d2)
            n_matches.append(len(i1))
            if len(i1) == 0:
                for t in accs:
                    accs[t].append(0.0)
                n_correct.append(0)
                continue
            err = np.linalg.norm(apply_homography(pair.homography, kp1[i1]) - kp2[i2], axis=1)
            for t in accs:
                accs[t].append(float(np.mean(err <= t)))
            n_correct.append(int(np.sum(err <= mid)))
        return ValResult(
            mma={t: float(np.mean(v)) if v else 0.0 for t, v in accs.items()},
            matches=float(np.mean(n_matches)) if n_matches else 0.0,
            correct=float(np.mean(n_correct)) if n_correct else 0.0,
            keypoints=float(np.mean(n_kp)) if n_kp else 0.0,
        )
    finally:
        net.train(was_training)
