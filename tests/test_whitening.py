"""Descriptor whitening: the fitted projection, the network hook and checkpoints."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sarreg.model import build_model, load_checkpoint, save_checkpoint
from sarreg.model.r2d2 import descriptors_around, descriptors_at
from sarreg.model.whitening import DescriptorWhitening, fit_whitening


def _pairs(n=4000, dim=16, seed=0):
    """Unit descriptors of n ground points seen twice, with differences 10x larger along the
    first 4 axes than along the others, plus the points' mean direction."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim)) + 2.0
    scale = np.r_[np.full(4, 1.0), np.full(dim - 4, 0.1)]
    a = base + rng.normal(size=(n, dim)) * scale
    b = base + rng.normal(size=(n, dim)) * scale
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a.astype(np.float32), b.astype(np.float32)


def test_fit_whitens_the_pair_differences():
    a, b = _pairs()
    mean, matrix = fit_whitening(a, b, np.concatenate([a, b]), shrink=0.0)
    np.testing.assert_allclose(mean, np.concatenate([a, b]).mean(0), atol=1e-6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    d = (a - b) @ matrix.T
    np.testing.assert_allclose(np.cov(d.T), np.eye(a.shape[1]), atol=0.05)
    # shrinking towards the identity keeps more of the original geometry
    _, shrunk = fit_whitening(a, b, a, shrink=0.5)
    ratio = np.linalg.cond(shrunk) / np.linalg.cond(matrix)
    assert ratio < 0.5


def test_whitening_separates_pairs_better_than_raw_descriptors():
    # same points, other noise draws: nearest-neighbour accuracy among 1000 points
    a, b = _pairs(n=6000, seed=1)
    mean, matrix = fit_whitening(a[:5000], b[:5000], np.concatenate([a, b])[:5000])
    test_a, test_b = torch.from_numpy(a[5000:]), torch.from_numpy(b[5000:])
    w = DescriptorWhitening(a.shape[1])
    w.set(mean, matrix)

    def nn_accuracy(x, y):
        return float((torch.argmax(x @ y.T, dim=1) == torch.arange(len(x))).float().mean())

    raw, white = nn_accuracy(test_a, test_b), nn_accuracy(w(test_a), w(test_b))
    assert white > raw + 0.1, (raw, white)


def test_fit_rejects_too_few_pairs_and_bad_input():
    a, b = _pairs(n=20)
    with pytest.raises(ValueError, match="at least 32 matching pairs"):
        fit_whitening(a, b, a)
    with pytest.raises(ValueError, match="shrink"):
        fit_whitening(*_pairs(), _pairs()[0], shrink=1.0)
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        fit_whitening(a, b[:10], a)


def test_identity_until_set_then_unit_norm_and_reset():
    w = DescriptorWhitening(8)
    x = F.normalize(torch.randn(5, 3, 8), dim=-1)
    assert not w.active
    assert w(x) is x  # skipped: bit-identical
    rng = np.random.default_rng(0)
    w.set(rng.normal(size=8) * 0.1, np.diag(rng.uniform(0.5, 2.0, 8)))
    assert w.active
    y = w(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(5, 3))
    assert w(x.half()).dtype == torch.float16
    w.reset()
    assert not w.active
    with pytest.raises(ValueError, match="does not fit"):
        w.set(np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="finite"):
        w.set(np.zeros(8), np.full((8, 8), np.nan))


def _whitened_net(seed=0):
    torch.manual_seed(seed)
    net = build_model("fast_r2d2", mchan=1, dim=16).eval()
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    net.whitening.set(rng.normal(size=16) * 0.05, q @ np.diag(rng.uniform(0.3, 3, 16)) @ q.T)
    return net


def test_network_samples_whitened_descriptors():
    net = _whitened_net()
    img = torch.rand(1, 1, 40, 48)
    maps = net.dense_maps(img)
    xy = np.array([[3.0, 4.0], [10.5, 20.25], [47.0, 39.0]])
    raw = descriptors_at(maps, xy)
    torch.testing.assert_close(net.descriptors_at(maps, xy), net.whitening(raw))
    around = net.descriptors_around(maps, xy, 2)
    torch.testing.assert_close(around, net.whitening(descriptors_around(maps, xy, 2)))
    # the centre of the neighbourhood is the keypoint's own descriptor
    torch.testing.assert_close(around[:, 12], net.descriptors_at(maps, xy), atol=1e-5, rtol=0)
    assert not torch.allclose(net.descriptors_at(maps, xy), raw, atol=1e-3)


def test_checkpoint_keeps_whitening_and_reads_files_without_it(tmp_path):
    net = _whitened_net(seed=2)
    path = save_checkpoint(tmp_path / "w.pt", net)
    back = load_checkpoint(path)
    assert back.net.whitening.active and "whitened" in back.summary()
    torch.testing.assert_close(back.net.whitening.matrix, net.whitening.matrix)
    torch.testing.assert_close(back.net.whitening.mean, net.whitening.mean)
    # a file written before whitening existed: no such entries, loads as the identity
    raw = torch.load(path, weights_only=True)
    raw["state_dict"] = {k: v for k, v in raw["state_dict"].items() if "whitening" not in k}
    torch.save(raw, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert not old.net.whitening.active and "whitened" not in old.summary()


def test_shipped_whitening_makes_unseen_sar_matches_more_accurate(data_dir):
    """Shipped model on speckled pairs of a Sentinel-1 GRD crop that no part of its training
    saw: matches through its whitening are correct (within 3 px) more often than without."""
    import rasterio

    from sarreg.evaluation.metrics import match_errors
    from sarreg.features import ExtractConfig, extract
    from sarreg.matching import MatchConfig, matched_points
    from sarreg.model.checkpoint import load_default_model
    from sarreg.training import synth

    with rasterio.open(data_dir / "s1_vv_grd_db.tif") as ds:
        db = ds.read(1)
    mask = db > -90
    scene = synth.smooth_intensity(synth.to_linear_intensity(np.where(mask, db, -30), "db"), mask)
    ranges = synth.SynthConfig(rotation_deg=15, scale=(0.8, 1.25), looks=(1.0, 1.0),
                               noise_prob=0.0, display_prob=0.0)  # fmt: skip
    rng = np.random.default_rng(0)
    origins = [(0, 0), (76, 25), (38, 12), (0, 25), (76, 0), (20, 10)]
    pairs = [synth.make_pair(scene, mask, o, 192, rng, ranges) for o in origins]
    net = load_default_model().net
    assert net.whitening.active
    cfg = ExtractConfig(scales=(1.0,), top_k=1500, progress=False)

    def accuracy() -> float:
        good = total = 0
        for p in pairs:
            f1 = extract(net, p.image1, p.mask1, cfg)
            f2 = extract(net, p.image2, p.mask2, cfg)
            _, xy1, xy2 = matched_points(f1, f2, MatchConfig(min_similarity=-1))
            err = match_errors(xy2, xy1, partial(synth.apply_homography, p.homography))
            good, total = good + int(np.sum(err <= 3.0)), total + len(err)
        return good / total

    whitened = accuracy()
    net.whitening.reset()
    raw = accuracy()
    assert whitened > raw + 0.015  # measured: 0.874 -> 0.902 (single-look speckle both sides)


def test_projection_is_the_normalized_centred_product():
    """forward folds the mean into one matrix product: the same numbers as the formula
    ``normalize((d - mean) @ M^T)`` on any leading shape, float32 and float16."""
    rng = np.random.default_rng(3)
    w = DescriptorWhitening(16)
    mean = rng.normal(size=16) * 0.2
    matrix = rng.normal(size=(16, 16))
    w.set(mean, matrix)
    x = F.normalize(torch.from_numpy(rng.normal(size=(4, 5, 16)).astype(np.float32)), dim=-1)
    expected = (x.double() - torch.from_numpy(mean)) @ torch.from_numpy(matrix).t()
    expected = F.normalize(expected, dim=-1).float()
    torch.testing.assert_close(w(x), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(w(x.half()).float(), expected, atol=2e-3, rtol=0)
    assert w(x[:0]).shape == (0, 5, 16)
