"""Keypoint extraction on real SAR crops with a seeded, randomly initialised Fast-R2D2."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from sarreg.features import (
    ExtractConfig,
    Features,
    extract,
    input_to_level,
    level_shape,
    level_to_input,
    pyramid_scales,
    tile_spans,
)
from sarreg.model import build_model
from sarreg.model.r2d2 import DenseMaps, descriptors_around, descriptors_at


@pytest.fixture(scope="module")
def crop(data_dir) -> np.ndarray:
    """A 256 x 256 crop of the Umbra image in [0, 1]."""
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        data = ds.read(1, window=((700, 956), (600, 856)))
    return data.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def net(crop):
    """Seeded random Fast-R2D2 (mchan=2) whose batch-norm statistics are fitted to ``crop``.

    With the default running statistics a random network gives nearly constant maps (all
    ties); fitting them once gives varied, realistic-looking score maps.
    """
    torch.manual_seed(0)
    model = build_model("fast_r2d2", mchan=2)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch -> its own statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(crop)[None, None])
    return model.eval()


LOOSE = dict(rep_threshold=0.4, rel_threshold=0.0, top_k=100000, min_size=64)


def _same_keypoints(a: Features, b: Features) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of the keypoints at identical positions, ``a.keypoints[i] ==
    b.keypoints[j]``."""
    key = {tuple(p): i for i, p in enumerate(a.keypoints.tolist())}
    common = [(key[tuple(p)], j) for j, p in enumerate(b.keypoints.tolist()) if tuple(p) in key]
    i, j = np.array(common, dtype=np.int64).reshape(-1, 2).T
    return i, j


def test_keypoints_inside_mask_and_border(net, crop):
    mask = np.ones(crop.shape, bool)
    mask[:, :100] = False
    mask[160:210, 120:220] = False
    cfg = ExtractConfig(**LOOSE, border=8, scales=(1.0, 0.71, 0.5))
    f = extract(net, crop, mask, cfg)
    assert len(f) > 100
    xy = f.keypoints
    h, w = crop.shape
    assert np.all(xy >= 8) and np.all(xy[:, 0] <= w - 1 - 8) and np.all(xy[:, 1] <= h - 1 - 8)
    r, c = np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)
    assert mask[r, c].all()
    assert np.unique(f.scales) == pytest.approx([1.0, 1 / 0.71, 2.0])
    # sorted by score, unit-norm descriptors, score = rep x rel >= rep threshold x 0
    assert np.all(np.diff(f.scores) <= 0)
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    # point + context descriptors (ExtractConfig.context_scale)
    assert f.descriptors.shape == (len(f), 256) and f.image_shape == crop.shape
    # without the mask there are keypoints in the masked area
    g = extract(net, crop, None, ExtractConfig(**LOOSE, scales=(1.0,)))
    assert (g.keypoints[:, 0] < 90).sum() > 10


def test_tiling_does_not_change_keypoints(net, crop):
    cfg = dict(LOOSE, scales=(1.0, 0.5))
    one = extract(net, crop, None, ExtractConfig(**cfg, tile_size=4096))
    tiled = extract(net, crop, None, ExtractConfig(**cfg, tile_size=160, tile_overlap=32))
    assert len(one) > 100
    i, j = _same_keypoints(one, tiled)
    assert len(i) >= 0.99 * max(len(one), len(tiled))
    np.testing.assert_allclose(tiled.scores[j], one.scores[i], atol=1e-5)
    np.testing.assert_allclose(tiled.descriptors[j], one.descriptors[i], atol=1e-4)
    np.testing.assert_allclose(
        tiled.local_descriptors[j].astype(np.float32),
        one.local_descriptors[i].astype(np.float32),
        atol=2e-3,
    )


def test_top_k_keeps_the_best(net, crop):
    cfg = dict(LOOSE, scales=(1.0, 0.5), tile_size=160, tile_overlap=32)
    full = extract(net, crop, None, ExtractConfig(**cfg))
    top = extract(net, crop, None, ExtractConfig(**{**cfg, "top_k": 50}))
    assert len(top) == 50 < len(full)
    np.testing.assert_array_equal(top.keypoints, full.keypoints[:50])
    np.testing.assert_array_equal(top.scores, full.scores[:50])


def test_local_descriptors_are_the_neighbourhood(net, crop):
    r = 2
    f = extract(net, crop, None, ExtractConfig(**LOOSE, scales=(1.0,), refine_radius=r))
    n = len(f)
    assert n > 50
    assert f.local_descriptors.shape == (n, (2 * r + 1) ** 2, net.dim)
    assert f.local_descriptors.dtype == np.float16
    assert f.local_offsets.shape == ((2 * r + 1) ** 2, 2)
    centre = int(np.flatnonzero((f.local_offsets == 0).all(axis=1))[0])
    w = ExtractConfig().context_weight  # the point part of [d, sqrt(w) c] / sqrt(1 + w)
    point = f.descriptors[:, : net.dim] * np.sqrt(1.0 + w)
    np.testing.assert_allclose(f.local_descriptors[:, centre].astype(np.float32), point, atol=2e-3)
    # offset (dx, dy) = (2, -1) is the descriptor of the pixel there
    k = int(np.flatnonzero((f.local_offsets == [2, -1]).all(axis=1))[0])
    inside = (f.keypoints[:, 0] < crop.shape[1] - 3) & (f.keypoints[:, 1] > 1)
    with torch.inference_mode():
        maps = net.dense_maps(torch.from_numpy(crop)[None, None])
        want = descriptors_at(maps, f.keypoints[inside].astype(np.float64) + [2, -1]).numpy()
    np.testing.assert_allclose(f.local_descriptors[inside, k].astype(np.float32), want, atol=2e-3)
    none = extract(net, crop, None, ExtractConfig(**LOOSE, scales=(1.0,), refine_radius=0))
    assert none.local_descriptors is None and none.local_offsets is None
    np.testing.assert_array_equal(none.keypoints, f.keypoints)


def test_local_descriptors_do_not_depend_on_the_chunk(net, crop, monkeypatch):
    """Local descriptors are computed LOCAL_CHUNK keypoints at a time: chunks that split the
    keypoints anywhere give the same arrays, in the keypoints' order."""
    import sarreg.features as features

    cfg = ExtractConfig(**LOOSE, scales=(1.0, 0.5), refine_radius=2)
    whole = extract(net, crop, None, cfg)
    assert len(whole) > 3 * 7
    monkeypatch.setattr(features, "LOCAL_CHUNK", 7)
    chunked = extract(net, crop, None, cfg)
    np.testing.assert_array_equal(chunked.keypoints, whole.keypoints)
    np.testing.assert_array_equal(chunked.local_descriptors, whole.local_descriptors)


def test_context_is_the_descriptor_at_half_scale(net, crop):
    import cv2

    cfg = ExtractConfig(**LOOSE, scales=(1.0, 0.71), refine_radius=0, context_weight=0.5)
    f = extract(net, crop, None, cfg)
    bare = extract(net, crop, None, ExtractConfig(**LOOSE, scales=(1.0, 0.71), context_scale=None))
    np.testing.assert_array_equal(f.keypoints, bare.keypoints)
    assert bare.descriptors.shape == (len(f), net.dim) and f.descriptors.shape == (len(f), 256)
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    # [d, sqrt(w) c] / sqrt(1 + w): the point part is the plain descriptor
    np.testing.assert_allclose(f.descriptors[:, :128] * np.sqrt(1.5), bare.descriptors, atol=1e-5)
    context = f.descriptors[:, 128:] * np.sqrt(1.5 / 0.5)
    np.testing.assert_allclose(np.linalg.norm(context, axis=1), 1.0, atol=1e-4)
    # the context of a keypoint of level s is the descriptor at its place in level s / 2
    for s in (1.0, 0.71):
        idx = np.flatnonzero(np.isclose(f.scales, 1.0 / s))
        assert len(idx) > 10
        hs, ws = level_shape(crop.shape, s * 0.5)
        small = cv2.resize(crop, (ws, hs), interpolation=cv2.INTER_AREA)
        pos = input_to_level(f.keypoints[idx], crop.shape, (hs, ws))
        with torch.inference_mode():
            maps = net.dense_maps(torch.from_numpy(small)[None, None])
            want = descriptors_at(maps, np.clip(pos, 0, [ws - 1, hs - 1])).numpy()
        np.testing.assert_allclose(context[idx], want, atol=1e-4)
    # tiles: the same context (the tile overlap covers the receptive field)
    small_tiles = dict(cfg.__dict__, tile_size=96, tile_overlap=32)  # context level 128 x 128
    tiled = extract(net, crop, None, ExtractConfig(**small_tiles))
    i, j = _same_keypoints(f, tiled)
    assert len(i) >= 0.99 * len(f)
    np.testing.assert_allclose(tiled.descriptors[j], f.descriptors[i], atol=1e-4)
    with pytest.raises(ValueError, match="context_scale"):
        ExtractConfig(context_scale=1.0)
    with pytest.raises(ValueError, match="context_weight"):
        ExtractConfig(context_weight=0.0)


@pytest.mark.parametrize("rank", ["reliability", "score"])
def test_rank_orders_by_the_chosen_score(net, crop, rank):
    f = extract(net, crop, None, ExtractConfig(**{**LOOSE, "top_k": 200}, scales=(1.0,), rank=rank))
    with torch.inference_mode():
        maps = net.dense_maps(torch.from_numpy(crop)[None, None])
    xx, yy = f.keypoints.round().astype(int).T
    rel = maps.reliability[0, 0].numpy()[yy, xx]
    rep = maps.repeatability[0, 0].numpy()[yy, xx]
    want = rel if rank == "reliability" else rel * rep
    np.testing.assert_allclose(f.scores, want, rtol=1e-5)
    assert np.all(np.diff(f.scores) <= 0)
    # the kept keypoints are the best of all repeatability peaks by that score
    every = extract(net, crop, None, ExtractConfig(**LOOSE, scales=(1.0,), rank=rank))
    assert f.scores[-1] >= every.scores[200]


class BlobNet:
    """Score maps = Gaussian-blurred image, so the keypoint of one blob is its centre.

    Stands in for the network to test extract()'s pyramid and coordinate bookkeeping.
    """

    dim = 3

    def dense_maps(self, x: torch.Tensor) -> DenseMaps:
        r = torch.arange(-6, 7, dtype=torch.float32)
        k = torch.exp(-(r**2) / 8.0)
        k = (k / k.sum())[None, None]
        rep = F.conv2d(F.conv2d(x, k[..., None, :], padding=(0, 6)), k[..., None], padding=(6, 0))
        low = torch.cat([x, x * x, torch.ones_like(x)], dim=1)
        return DenseMaps(rep, torch.ones_like(rep), low, tuple(x.shape[-2:]))

    def descriptors_at(self, maps: DenseMaps, xy) -> torch.Tensor:
        return descriptors_at(maps, xy)

    def descriptors_around(self, maps: DenseMaps, xy, radius: int) -> torch.Tensor:
        return descriptors_around(maps, xy, radius)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_blob_position_maps_back_across_scales(scale):
    # a blob centred on the level-pixel centre (40, 30) of the given scale
    x0, y0 = (40 + 0.5) / scale - 0.5, (30 + 0.5) / scale - 0.5
    yy, xx = np.mgrid[0:256, 0:256]
    sigma = 3.0 / scale
    img = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)).astype(np.float32)
    cfg = ExtractConfig(scales=(scale,), rep_threshold=0.1, rel_threshold=0.5, border=4)
    f = extract(BlobNet(), img, None, cfg)
    assert len(f) == 1
    np.testing.assert_allclose(f.keypoints[0], [x0, y0], atol=1e-4)
    assert f.scales[0] == pytest.approx(1 / scale)


def test_saturated_reliability_ties_go_to_the_most_repeatable():
    # BlobNet's reliability is exactly 1 everywhere (as a trained network's saturates on many
    # peaks): the brightest blob must win, not the first in raster order (the top one)
    yy, xx = np.mgrid[0:128, 0:128]
    img = np.zeros((128, 128), np.float32)
    for (x0, y0), amp in (((30, 20), 0.5), ((90, 100), 1.0), ((60, 60), 0.7)):
        img += amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 18.0).astype(np.float32)
    cfg = ExtractConfig(scales=(1.0,), top_k=2, border=4, refine_radius=0)
    f = extract(BlobNet(), img, None, cfg)
    np.testing.assert_allclose(f.keypoints, [[90, 100], [60, 60]], atol=1e-4)
    np.testing.assert_array_equal(f.scores, [1.0, 1.0])


def test_npz_round_trip(net, crop, tmp_path):
    f = extract(net, crop, None, ExtractConfig(**dict(LOOSE, top_k=200), scales=(1.0, 0.5)))
    path = tmp_path / "feat.tmp"  # no .npz suffix: written to exactly this path
    f.to_npz(path)
    with np.load(path) as z:
        assert z["keypoints"].shape == (len(f), 3)
        np.testing.assert_array_equal(z["keypoints"][:, 2], f.scales)
    g = Features.from_npz(path)
    for name in ("keypoints", "scales", "scores", "descriptors"):
        np.testing.assert_array_equal(getattr(g, name), getattr(f, name))
    assert g.image_shape == f.image_shape and len(g) == len(f) == 200
    sub = f.subset(np.arange(10))
    assert len(sub) == 10 and sub.descriptors.shape == (10, 256)


def test_pyramid_and_tiles():
    assert pyramid_scales((1024, 1024), ExtractConfig()) == pytest.approx([1.0, 2**-0.5, 0.5])
    cfg = ExtractConfig(scale_factor=2**0.25, min_scale=0.25)  # the R2D2 research pyramid
    s = pyramid_scales((1024, 1024), cfg)
    assert len(s) == 9 and s[0] == 1.0 and s[-1] == pytest.approx(0.25)
    # 350 x 250: levels below 256 px are skipped
    assert pyramid_scales((250, 350), cfg) == pytest.approx([1.0, 2**-0.25])
    # too small for any level: the closest one is kept
    assert pyramid_scales((100, 100), cfg) == [1.0]
    assert pyramid_scales((100, 100), ExtractConfig(scales=(0.5, 2.0))) == [2.0, 0.5]
    spans = tile_spans(1000, 256, 41)
    cores = [(a, b) for a, b, _, _ in spans]
    assert cores[0][0] == 0 and cores[-1][1] == 1000
    assert all(b == c for (_, b), (c, _) in zip(cores[:-1], cores[1:], strict=True))
    assert all(t0 % 2 == 0 and c0 - t0 in (0, 42) for c0, _, t0, _ in spans)
    np.testing.assert_allclose(level_to_input([[0.0, 0.0]], (100, 100), (25, 25)), [[1.5, 1.5]])


def test_training_mode_restored(net, crop):
    net.train()
    try:
        extract(net, crop[:96, :96], None, ExtractConfig(scales=(1.0,), border=0))
        assert net.training
    finally:
        net.eval()
