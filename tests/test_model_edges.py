"""Descriptors sampled at the image's edge pixels by a tiny random-weight network (no
shipped model): equal to forward()'s dense descriptors there, the edge value held out to the
pixel's outer boundary (x, y = -0.5 and W - 0.5), refused beyond."""

from __future__ import annotations

import pytest
import torch

from sarreg.model import build_model, flops_per_pixel
from sarreg.model.r2d2 import ARCHITECTURES, descriptors_at, layer_specs


def _tiny(arch: str):
    torch.manual_seed(1)
    return build_model(arch, mchan=1).eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_edge_pixels_sample_the_dense_descriptors(arch):
    h, w = 21, 30
    img = torch.rand(h, w, generator=torch.Generator().manual_seed(2))
    net = _tiny(arch)
    with torch.inference_mode():
        dense = net(img[None, None])["descriptors"][0]  # (D, H, W)
    maps = net.dense_maps(img)
    corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
    got = descriptors_at(maps, torch.tensor(corners, dtype=torch.float64))
    want = torch.stack([dense[:, y, x] for x, y in corners])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # out to the outer boundary of the edge pixels the edge descriptor holds
    outer = torch.tensor([(-0.5, -0.5), (w - 0.5, -0.5), (-0.5, h - 0.5), (w - 0.5, h - 0.5)])
    torch.testing.assert_close(descriptors_at(maps, outer), got[:4], atol=1e-5, rtol=1e-4)
    for bad in ([-0.6, 3.0], [3.0, h - 0.4], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="inside|finite"):
            descriptors_at(maps, torch.tensor([bad]))
    assert descriptors_at(maps, torch.zeros(0, 2)).shape == (0, dense.shape[0])


def test_default_networks_are_the_published_size():
    """Without options both architectures are the paper's: widths 32, 32, 64, 64, 128, 128,
    128, 128 then 128-d descriptors (mchan 4, dim 128), no ReLU after the last convolutions."""
    for arch in ARCHITECTURES:
        specs = layer_specs(arch)
        assert [s.out_channels for s in specs] == [32, 32, 64, 64, 128, 128, 128, 128, 128]
        assert not specs[-1].relu and not specs[-1].bn
        net = build_model(arch)
        assert net(torch.zeros(1, 1, 16, 16))["descriptors"].shape == (1, 128, 16, 16)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_flops_per_pixel_counts_the_networks_multiply_adds(arch):
    """flops_per_pixel (as the extraction benchmark prints it) is twice the multiply-adds of
    the convolution stack, counted here on the network itself, plus the two 1x1 heads (3
    outputs from ``dim`` channels) at the resolution inference runs them: a quarter of the
    pixels for the Fast variant."""
    net = build_model(arch, mchan=2, dim=64).eval()
    macs = []

    def count(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        macs.append(output.numel() * module.in_channels * k)

    hooks = [block.conv.register_forward_hook(count) for block in net.blocks]
    with torch.inference_mode():
        net(torch.zeros(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    heads = 2 * 64 * 3 / (4 if arch == "fast_r2d2" else 1)
    assert flops_per_pixel(arch, mchan=2, dim=64) == pytest.approx(2 * sum(macs) / 64**2 + heads)


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (3, (2, 3)), (5, (1, 2))])
def test_offset_borders_rebuild_the_offset_map(kernel, dilation):
    """The folded-normalization offset of a same-size convolution as an interior constant plus
    border corrections equals ``conv(ones)`` on the whole image, for any padding; an image
    smaller than ``2 p + 1`` along an axis has no such decomposition (None)."""
    from sarreg.model.r2d2 import _offset_borders, _offset_map, _subtract_offset_borders_

    gen = torch.Generator().manual_seed(3)
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    pad = tuple(di * (kernel - 1) // 2 for di in d)
    conv = torch.nn.Conv2d(1, 4, kernel, padding=pad, dilation=d)
    weight = torch.randn(4, 1, kernel, kernel, generator=gen)
    like = torch.zeros(1)
    for h, w in [(2 * pad[0] + 1, 2 * pad[1] + 1), (2 * pad[0] + 4, 2 * pad[1] + 7)]:
        const, delta = _offset_borders(weight, conv, h, w, like)
        y = -const.view(1, -1, 1, 1).repeat(1, 1, h, w)
        _subtract_offset_borders_(y, delta, conv.padding)
        torch.testing.assert_close(-y, _offset_map(weight, conv, h, w, like))
    assert _offset_borders(weight, conv, 2 * pad[0], 2 * pad[1] + 1, like) is None
    assert _offset_borders(weight, conv, 2 * pad[0] + 1, 2 * pad[1], like) is None


def test_channels_last_keeps_a_channels_last_tensor_and_converts_one_channel():
    """A tensor already in channels-last layout is returned as is (no copy); a one-channel
    tensor, which torch counts as channels-last in either layout, gets channel stride 1."""
    from sarreg.model.r2d2 import _channels_last

    x = torch.randn(1, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    assert _channels_last(x) is x
    one = torch.randn(1, 1, 5, 6)
    got = _channels_last(one)
    assert got.stride(1) == 1 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, one)
    plain = torch.randn(1, 4, 5, 6)
    got = _channels_last(plain)
    assert got.stride(1) == 1 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, plain)


def test_layer_specs_refuse_a_width_or_dimension_below_one():
    """mchan and dim of at least 1 build a network (the smallest: one channel per unit of
    width, 1-D descriptors); 0 or negative is refused before any layer is made."""
    specs = layer_specs("fast_r2d2", mchan=1, dim=1)
    assert [s.out_channels for s in specs] == [8, 8, 16, 16, 32, 32, 32, 32, 1]
    for mchan, dim in [(0, 128), (-2, 128), (4, 0), (4, -1)]:
        with pytest.raises(ValueError, match="positive"):
            layer_specs("r2d2", mchan=mchan, dim=dim)
