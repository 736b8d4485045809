"""Fitting the descriptor whitening during training (``sarreg.training.whiten``)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from sarreg.errors import ConfigError
from sarreg.model import build_model
from sarreg.model.checkpoint import load_checkpoint, load_default_model
from sarreg.model.whitening import fit_whitening
from sarreg.training.loop import train
from sarreg.training.synth import SynthPair
from sarreg.training.whiten import fit_net_whitening, matching_descriptors


def _shifted_pair(data_dir, dx=6, dy=4, size=96) -> SynthPair:
    """A real Umbra crop and the same ground shifted by (dx, dy) pixels (even: the pooled
    network sees the same content)."""
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        big = ds.read(1, window=Window(300, 1200, size + dx, size + dy)).astype(np.float32)
    big /= 255.0
    img1 = big[dy:, dx:]
    img2 = big[:size, :size]  # image-1 pixel (x, y) is image-2 pixel (x + dx, y + dy)
    h = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)
    ones = np.ones((size, size), bool)
    return SynthPair(img1, img2, ones, ones, h, np.zeros((size, size, 2), np.float32), ones)


def test_matching_descriptors_pair_the_same_ground_points(data_dir):
    net = load_default_model().net
    net.whitening.reset()
    pair = _shifted_pair(data_dir)
    a, b, everything = matching_descriptors(net, [pair], 300, max_error=0.5)
    assert len(a) > 30 and len(everything) >= len(a)
    cos = np.sum(a * b, axis=1)
    assert np.median(cos) > 0.95  # the same content (the padding reaches in a little)
    # a wrong ground truth pairs other points: their descriptors differ
    wrong = SynthPair(**{**pair.__dict__, "homography": np.eye(3)})
    a2, b2, _ = matching_descriptors(net, [wrong], 300, max_error=0.5)
    assert np.median(np.sum(a2 * b2, axis=1)) < np.median(cos) - 0.1


def test_fit_net_whitening_sets_it_and_keeps_the_old_one_when_it_cannot(data_dir):
    torch.manual_seed(1)
    net = build_model("fast_r2d2", mchan=1, dim=16).eval()
    pair = _shifted_pair(data_dir, dx=5, dy=3)  # odd shifts: descriptors differ a little
    fit = fit_net_whitening(net, [pair], 300, max_error=1.0)
    assert fit.fitted and net.whitening.active and fit.pairs >= 32
    before = net.whitening.matrix.clone()
    # one keypoint per image: too few pairs, the fitted projection stays
    fit = fit_net_whitening(net, [pair], 1, max_error=1.0)
    assert not fit.fitted and torch.equal(net.whitening.matrix, before)
    with pytest.raises(ValueError, match="do not differ"):
        x = np.random.default_rng(0).normal(size=(64, 16))
        fit_whitening(x, x, x)


def test_training_fits_whitening_and_trains_through_it(tiny_config):
    cfg = tiny_config(
        steps=2, whiten={"pairs": 12, "max_keypoints": 300}, **{"loss.whitened": True}
    )
    result = train(cfg, progress=False)
    ck = load_checkpoint(result.last)
    assert ck.net.whitening.active
    plain = train(
        tiny_config(steps=1, out=str(result.last.parent.parent / "plain")), progress=False
    )
    assert not load_checkpoint(plain.last).net.whitening.active
    with pytest.raises(ConfigError, match="loss.whitened"):
        tiny_config(**{"loss.whitened": True})
