"""Fit the network's descriptor whitening (:mod:`sarreg.model.whitening`) on training pairs.

Keypoints come from the validation detector (:func:`sarreg.training.validate.extract_config`)
on both images of synthetic pairs drawn from the training data. A keypoint of image 1 and one
of image 2 form a matching pair when the ground-truth transform maps the first within
``max_error`` pixels of the second (the nearest one); the whitening is fitted on the
descriptors of those pairs (the network's own, before any whitening).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from sarreg.model.whitening import fit_whitening
from sarreg.training.config import TrainConfig
from sarreg.training.data import LoadedSource, validation_pairs
from sarreg.training.synth import SynthPair, apply_homography
from sarreg.training.validate import extract_config, pair_features

logger = logging.getLogger(__name__)


@dataclass
class WhitenFit:
    """Outcome of :func:`fit_net_whitening`.

    Attributes:
        fitted: True when the network's whitening was set; False when there were too few
            matching pairs (the network is left as it was).
        pairs: matching keypoint pairs found.
        keypoints: keypoints in all images.
    """

    fitted: bool
    pairs: int
    keypoints: int


def matching_descriptors(
    net: torch.nn.Module,
    pairs: Sequence[SynthPair],
    max_keypoints: int,
    max_error: float,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descriptors of ground-truth matching keypoints in ``pairs``, as ``net`` gives them.

    Returns:
        ``(desc1 (P, D), desc2 (P, D), all (N, D))`` float32: ``desc1[i]`` (image 1) and
        ``desc2[i]`` (image 2) describe the same ground point; ``all`` holds every keypoint's
        descriptor.
    """
    # the validation detector without the neighbourhood descriptors (no matching here) and
    # without the context (the whitening applies to the network's descriptors)
    xcfg = dataclasses.replace(
        extract_config(max_keypoints, device), refine_radius=0, context_scale=None
    )
    d1, d2, everything = [], [], []
    for pair in pairs:
        f1, f2 = pair_features(net, pair, xcfg)  # extract() restores the network's mode
        everything += [f1.descriptors, f2.descriptors]
        if len(f1) == 0 or len(f2) == 0:
            continue
        mapped = apply_homography(pair.homography, f1.keypoints.astype(np.float64))
        dist, j = cKDTree(f2.keypoints.astype(np.float64)).query(mapped)
        ok = dist <= max_error
        d1.append(f1.descriptors[ok])
        d2.append(f2.descriptors[j[ok]])
    dim = int(net.dim)
    empty = np.zeros((0, dim), np.float32)
    return (
        np.concatenate(d1) if d1 else empty,
        np.concatenate(d2) if d2 else empty,
        np.concatenate(everything) if everything else empty,
    )


def whitening_pairs(sources: Sequence[LoadedSource], cfg: TrainConfig) -> list[SynthPair]:
    """The fixed pairs of ``cfg.whiten`` from the training ``sources`` (training synthesis)."""
    return validation_pairs(
        sources, cfg.whiten.pairs, cfg.data.crop, cfg.synth, cfg.preprocess, cfg.whiten.seed
    )


def fit_net_whitening(
    net: torch.nn.Module,
    pairs: Sequence[SynthPair],
    max_keypoints: int,
    max_error: float = 1.5,
    shrink: float = 0.1,
    spread_power: float = 0.0,
    device: torch.device | str = "cpu",
) -> WhitenFit:
    """Fit and set ``net.whitening`` from ``pairs`` (the previous whitening is not used)."""
    previous = {k: v.clone() for k, v in net.whitening.state_dict().items()}
    net.whitening.reset()
    a, b, everything = matching_descriptors(net, pairs, max_keypoints, max_error, device)
    try:
        mean, matrix = fit_whitening(a, b, everything, shrink, spread_power)
    except ValueError as err:
        net.whitening.load_state_dict(previous)
        logger.warning("descriptor whitening not fitted: %s", err)
        return WhitenFit(False, len(a), len(everything))
    net.whitening.set(mean, matrix)
    return WhitenFit(True, len(a), len(everything))


def refit(
    net: torch.nn.Module,
    pairs: Sequence[SynthPair],
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
) -> WhitenFit:
    """:func:`fit_net_whitening` with the settings of ``cfg.whiten`` (keypoints per image:
    ``whiten.max_keypoints``, else ``val.max_keypoints``)."""
    w = cfg.whiten
    return fit_net_whitening(
        net,
        pairs,
        w.max_keypoints or cfg.val.max_keypoints,
        w.max_error,
        w.shrink,
        w.spread_power,
        device=device,
    )
