"""Inference path of the network: dense_maps / descriptors_at against forward, on real SAR crops."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from sarreg.model import ARCHITECTURES, DenseMaps, build_model, descriptors_at


def _umbra_crop(data_dir, rows: int, cols: int, row_off: int = 700, col_off: int = 900):
    """A real Umbra crop scaled to [0, 1], ``(rows, cols)`` float32."""
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        img = ds.read(1, window=Window(col_off, row_off, cols, rows)).astype(np.float32)
    return torch.from_numpy(img / 255.0)


def _s1_db_crop(data_dir):
    """The real S1 dB image, valid pixels rescaled to [0, 1], nodata set to 0; ``(217, 268)``."""
    with rasterio.open(data_dir / "s1_vv_grd_db.tif") as ds:
        img = ds.read(1)
        valid = img != ds.nodata
    lo, hi = np.percentile(img[valid], [1, 99])
    out = np.where(valid, np.clip((img - lo) / (hi - lo), 0, 1), 0).astype(np.float32)
    return torch.from_numpy(out)


def _net(arch: str, seed: int = 0, **kwargs):
    """A randomly initialized network with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = build_model(arch, **kwargs)
    with torch.no_grad():
        for block in net.blocks:
            if block.bn is not None:
                block.bn.running_mean.normal_(0.0, 0.05)
                block.bn.running_var.uniform_(0.5, 2.0)
        if net.input_offset is not None:
            net.input_offset.normal_(0.0, 0.05)
    return net.eval()


def _grid_xy(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(45, 38), (40, 32)])
def test_dense_maps_equal_forward(data_dir, arch, shape):
    """Score maps and descriptors agree with forward(), odd sizes and chunk borders included."""
    img = _umbra_crop(data_dir, *shape)
    net = _net(arch, input_offset=True)
    with torch.inference_mode():
        ref = net(img[None, None])
    out = net.dense_maps(img, chunk_rows=7)
    assert isinstance(out, DenseMaps)
    assert out.image_shape == shape
    assert out.repeatability.shape == (1, 1, *shape)
    assert out.reliability.shape == (1, 1, *shape)
    expect_low = shape if arch == "r2d2" else (shape[0] // 2, shape[1] // 2)
    assert tuple(out.low_res.shape[-2:]) == expect_low
    torch.testing.assert_close(out.repeatability, ref["repeatability"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.reliability, ref["reliability"], atol=1e-6, rtol=1e-5)
    desc = net.descriptors_at(out, _grid_xy(*shape))
    expect = ref["descriptors"][0].flatten(1).t()
    torch.testing.assert_close(desc, expect, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(len(desc)), atol=1e-5, rtol=0)


def test_dense_maps_batch_and_chunking(data_dir):
    """Chunk size does not change results; batch items are processed independently."""
    img = _s1_db_crop(data_dir)[:60, :70]
    other = _umbra_crop(data_dir, 60, 70)
    net = _net("fast_r2d2", seed=1)
    batch = torch.stack([img, other])[:, None]
    a = net.dense_maps(batch, chunk_rows=1000)
    b = net.dense_maps(batch, chunk_rows=3)
    torch.testing.assert_close(a.repeatability, b.repeatability, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.reliability, b.reliability, atol=1e-6, rtol=0)
    single = net.dense_maps(other)
    torch.testing.assert_close(a.repeatability[1:], single.repeatability, atol=1e-6, rtol=0)
    xy = np.array([[3.0, 4.0], [69.0, 59.0], [0.0, 0.0]])
    torch.testing.assert_close(
        descriptors_at(a, xy, batch_index=1), descriptors_at(single, xy), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(a.scores, a.repeatability * a.reliability)
    assert ((a.scores > 0) & (a.scores < 1)).all()


def test_dense_maps_is_inference_only(data_dir):
    net = _net("fast_r2d2")
    assert any(p.requires_grad for p in net.parameters())
    out = net.dense_maps(_umbra_crop(data_dir, 24, 24))
    assert not out.repeatability.requires_grad
    assert not out.low_res.requires_grad


def test_fractional_keypoints_interpolate_features(data_dir):
    """Between pixels, descriptors are the normalized bilinear mix of the raw features."""
    img = _umbra_crop(data_dir, 30, 28)
    net = _net("r2d2", seed=2)
    out = net.dense_maps(img)
    with torch.inference_mode():
        feats = net.features(img[None, None])[0]
    x, y = 10, 17
    got = net.descriptors_at(out, [[x + 0.25, y + 0.5]])[0]
    top = 0.75 * feats[:, y, x] + 0.25 * feats[:, y, x + 1]
    bottom = 0.75 * feats[:, y + 1, x] + 0.25 * feats[:, y + 1, x + 1]
    expect = F.normalize(0.5 * top + 0.5 * bottom, dim=0)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    # Fast variant: continuous in the position, equal to forward at the pixels.
    fast = _net("fast_r2d2", seed=2)
    fout = fast.dense_maps(img)
    d = fast.descriptors_at(fout, [[x, y], [x + 1e-3, y], [x + 0.5, y], [x + 1, y]])
    assert torch.dot(d[0], d[1]) > 0.9999
    assert torch.dot(d[0], d[2]) < 1.0 - 1e-6  # it does move between pixels


def test_grey_input_feeds_three_channel_net(data_dir):
    img = _umbra_crop(data_dir, 20, 26)
    net = _net("fast_r2d2", in_channels=3)
    a = net.dense_maps(img[None, None])
    b = net.dense_maps(img.expand(1, 3, -1, -1))
    torch.testing.assert_close(a.repeatability, b.repeatability)
    with pytest.raises(ValueError, match="channels"):
        net.dense_maps(torch.zeros(1, 2, 20, 26))


def test_descriptors_at_rejects_points_outside(data_dir):
    net = _net("fast_r2d2")
    out = net.dense_maps(_umbra_crop(data_dir, 20, 30))
    assert net.descriptors_at(out, np.zeros((0, 2))).shape == (0, net.dim)
    corners = net.descriptors_at(out, [[-0.5, -0.5], [29.5, 19.5]])
    assert torch.isfinite(corners).all()
    for bad in ([[30.0, 5.0]], [[5.0, -0.6]], [[float("nan"), 1.0]]):
        with pytest.raises(ValueError):
            net.descriptors_at(out, bad)
    with pytest.raises(ValueError, match="chunk_rows"):
        net.dense_maps(torch.zeros(8, 8), chunk_rows=0)


# ----------------------------------------------------------------- fast heads, channels-last


def _reference_forward(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The network spelled out op by op in the default layout (the training-time numbers)."""
    h, w = x.shape[-2:]
    for i, block in enumerate(net.blocks):
        y = block.conv(x)
        if i == 0 and net.input_offset is not None:
            ones = torch.ones(1, 1, h, w)
            y = y - F.conv2d(ones, net.input_offset, padding=block.conv.padding)
        if block.bn is not None:
            y = block.bn(y)
        if block.relu:
            y = F.relu(y)
        x = F.avg_pool2d(y, 2) if block.pool_after else y
    if x.shape[-2:] == (h, w):
        feats = x
    else:  # pooled by 2: upsample by exactly 2, an odd last row/column repeats the one before
        hl, wl = x.shape[-2:]
        feats = F.interpolate(x, size=(2 * hl, 2 * wl), mode="bilinear", align_corners=False)
        feats = F.pad(feats, (0, w - 2 * wl, 0, h - 2 * hl), mode="replicate")
    ur = F.softplus(net.repeatability_head(feats**2))
    return {
        "descriptors": F.normalize(feats, dim=1),
        "repeatability": ur / (1 + ur),
        "reliability": torch.softmax(net.reliability_head(feats**2), dim=1)[:, 1:2],
    }


def _head_logits(net, feats: torch.Tensor) -> torch.Tensor:
    """Reliability (2) and repeatability (1) logits of full-resolution features."""
    sq = feats**2
    return torch.cat([net.reliability_head(sq), net.repeatability_head(sq)], dim=1)


def test_odd_sizes_keep_the_pixel_grid(data_dir):
    """Away from the bottom/right edge, an image and the same image one pixel taller and
    wider give the same maps: odd sizes are not stretched by the upsampling (a stretch moved
    keypoints by up to 0.5 px)."""
    net = _net("fast_r2d2")
    img = _umbra_crop(data_dir, 97, 99)
    with torch.inference_mode():
        odd = net(img[None, None])
        even = net(img[:96, :98][None, None])
        maps_odd = net.dense_maps(img[None, None])
    inner = (slice(None), slice(None), slice(0, 60), slice(0, 60))  # far from the edge
    for key in ("descriptors", "repeatability", "reliability"):
        assert torch.allclose(odd[key][inner], even[key][inner], atol=1e-5), key
    assert torch.allclose(maps_odd.repeatability[inner], even["repeatability"][inner], atol=1e-5)
    xy = torch.tensor([[10.0, 20.0], [59.0, 3.0], [33.5, 47.25]])
    d_odd = net.descriptors_at(maps_odd, xy)
    d_even = net.descriptors_at(net.dense_maps(img[:96, :98][None, None]), xy)
    assert torch.allclose(d_odd, d_even, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_numbers_unchanged(data_dir, arch):
    """forward() (training) still computes exactly the plain op sequence."""
    img = _umbra_crop(data_dir, 35, 44)[None, None]
    net = _net(arch, input_offset=True)
    with torch.inference_mode():
        got = net(img)
        expect = _reference_forward(net, img)
    for key in ("descriptors", "repeatability", "reliability"):
        assert torch.equal(got[key], expect[key]), key


@pytest.mark.parametrize(
    ("arch", "mchan", "shape"),
    [
        ("fast_r2d2", 2, (64, 80)),
        ("fast_r2d2", 2, (67, 91)),
        ("fast_r2d2", 2, (9, 13)),
        ("fast_r2d2", 4, (64, 80)),
        ("fast_r2d2", 4, (67, 91)),
        ("fast_r2d2", 4, (9, 13)),
        ("fast_r2d2", 2, (2, 3)),
        ("r2d2", 2, (67, 91)),
        ("r2d2", 2, (9, 13)),
        ("r2d2", 4, (2, 5)),
    ],
)
def test_dense_maps_match_forward_all_sizes(data_dir, arch, mchan, shape):
    """Maps, head logits and features agree with forward() for even, odd and tiny sizes."""
    img = _umbra_crop(data_dir, *shape, row_off=400, col_off=1500)[None, None]
    net = _net(arch, seed=mchan, mchan=mchan, input_offset=True)
    with torch.inference_mode():
        ref = net(img)
        ref_low = net.low_res_features(img)
        ref_logits = _head_logits(net, net.features(img))
    out = net.dense_maps(img, chunk_rows=16)
    assert (out.repeatability - ref["repeatability"]).abs().max() < 1e-5
    assert (out.reliability - ref["reliability"]).abs().max() < 1e-5
    # the maps above saturate on tiny images: compare what feeds them too
    scale = ref_low.abs().max()
    assert scale > 0
    assert (out.low_res - ref_low).abs().max() <= 1e-5 * scale
    assert out.low_res.permute(0, 2, 3, 1).is_contiguous()  # channels-last, as documented
    assert out.repeatability.is_contiguous() and out.reliability.is_contiguous()
    # the logits behind the maps, through the same low-resolution features as forward
    from sarreg.model.r2d2 import _combine_head_terms, _quadratic_head_terms

    if arch == "fast_r2d2":
        weight, bias = net._head_weights()
        with torch.inference_mode():
            terms = _quadratic_head_terms(ref_low, weight, bias, chunk_rows=3)
            logits = _combine_head_terms(terms, shape, chunk_rows=5)
        err = (logits - ref_logits).abs().max() / ref_logits.abs().max()
        assert err < 1e-5
    desc = net.descriptors_at(out, _grid_xy(*shape))
    expect = ref["descriptors"][0].flatten(1).t()
    torch.testing.assert_close(desc, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("low_shape", [(1, 1), (1, 2), (2, 1), (4, 6), (16, 21), (33, 45)])
@pytest.mark.parametrize("chunk_rows", [1, 4, 256])
def test_quadratic_head_expansion_is_exact(low_shape, chunk_rows):
    """The expanded heads equal the heads on upsampled features (random, signed data)."""
    from sarreg.model.r2d2 import _combine_head_terms, _quadratic_head_terms, upsample_features

    gen = torch.Generator().manual_seed(sum(low_shape) + chunk_rows)
    h, w = low_shape
    low = torch.randn(2, 24, h, w, generator=gen)
    weight = torch.randn(3, 24, generator=gen)
    bias = torch.randn(3, generator=gen)
    sizes = [(2 * h, 2 * w), (2 * h + 1, 2 * w + 1), (3 * h + 2, 2 * w), (3 * h + 2, 2 * w + 1)]
    for size in sizes:
        up = upsample_features(low, size)
        expect = torch.einsum("kc,bchw->bkhw", weight, up**2) + bias.view(1, 3, 1, 1)
        terms = _quadratic_head_terms(low, weight, bias, chunk_rows=chunk_rows)
        assert terms.shape == (2, h, w, 3, 3, 3)
        got = _combine_head_terms(terms, size, chunk_rows=chunk_rows)
        assert got.shape == expect.shape
        assert (got - expect).abs().max() <= 1e-5 * expect.abs().max()


@pytest.mark.parametrize("shape", [(2, 2), (2, 7), (3, 3), (31, 26)])
def test_inference_backbone_matches_default(data_dir, shape):
    """Channels-last + folded batch norms + border offsets: same features, any size."""
    img = _umbra_crop(data_dir, 2 * shape[0], 2 * shape[1])[None, None, ::2, ::2]
    img = torch.cat([img, img.flip(-1)])
    for arch in ARCHITECTURES:
        net = _net(arch, seed=4, input_offset=True)
        with torch.no_grad():
            net.input_offset.normal_(0.0, 0.3)  # strong border effect
            a = net.low_res_features(img)
            b = net.low_res_features(img, inference=True)
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    # batch norms in training mode use the batch statistics: not folded, still equal
    net.train()
    with torch.no_grad():
        a = net.low_res_features(img)
        b = net.low_res_features(img, inference=True)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_descriptors_at_independent_of_memory_format(data_dir):
    net = _net("fast_r2d2", seed=5)
    out = net.dense_maps(_umbra_crop(data_dir, 40, 50))
    plain = DenseMaps(out.repeatability, out.reliability, out.low_res.contiguous(), (40, 50))
    xy = np.array([[0.0, 0.0], [13.0, 7.0], [20.5, 31.25], [49.5, 39.5]])
    assert torch.equal(descriptors_at(out, xy), descriptors_at(plain, xy))


def test_fast_net_needs_two_pixels():
    net = _net("fast_r2d2")
    with pytest.raises(ValueError, match="2x2"):
        net.dense_maps(torch.zeros(1, 9))
    assert net.dense_maps(torch.zeros(2, 2)).repeatability.shape == (1, 1, 2, 2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(61, 50), (64, 64)])
def test_descriptors_around_equal_descriptors_at_the_neighbours(data_dir, arch, shape):
    from sarreg.model.r2d2 import descriptors_around

    net = _net(arch, mchan=1)
    img = _umbra_crop(data_dir, *shape)
    maps = net.dense_maps(img[None, None])
    h, w = shape
    xy = _grid_xy(h, w)[::7].to(torch.float64)  # includes the corners' neighbourhoods
    xy = torch.cat([xy, torch.tensor([[w - 1.0, h - 1.0], [0.0, h - 1.0]])])
    r = 3
    off = torch.stack(torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1),
                                     indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # fmt: skip
    pts = xy[:, None, :] + off[None].to(torch.float64)
    pts[..., 0].clamp_(0, w - 1)
    pts[..., 1].clamp_(0, h - 1)
    want = descriptors_at(maps, pts.reshape(-1, 2)).reshape(len(xy), len(off), -1)
    got = descriptors_around(maps, xy, r)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
