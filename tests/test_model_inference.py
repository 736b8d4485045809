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
