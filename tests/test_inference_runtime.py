"""The inference pass: context levels reused from the pyramid, and the ONNX Runtime backbone
(opt-in) giving PyTorch's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from sarreg.features import ExtractConfig, extract, input_to_level, level_shape, resize_image
from sarreg.model import build_model, runtime
from sarreg.model.r2d2 import descriptors_at


@pytest.fixture(scope="module")
def crop(data_dir) -> np.ndarray:
    """A 256 x 256 crop of the Umbra image in [0, 1]."""
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        data = ds.read(1, window=((700, 956), (600, 856)))
    return data.astype(np.float32) / 255.0


@pytest.fixture()
def net(crop):
    """Seeded random Fast-R2D2 (mchan=2), batch-norm statistics fitted to ``crop``."""
    torch.manual_seed(0)
    model = build_model("fast_r2d2", mchan=2)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(crop)[None, None])
    return model.eval()


class _Counting:
    """``net`` with its ``dense_maps`` and ``descriptor_maps`` calls counted (image sizes
    recorded)."""

    def __init__(self, net) -> None:
        self.net, self.sizes = net, []

    def __getattr__(self, name):
        return getattr(self.net, name)

    def dense_maps(self, x, *args, **kwargs):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.net.dense_maps(x, *args, **kwargs)

    def descriptor_maps(self, x, *args, **kwargs):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.net.descriptor_maps(x, *args, **kwargs)


def test_context_reuses_the_pyramid_level_it_needs(net, crop):
    counted = _Counting(net)
    cfg = ExtractConfig(rep_threshold=0.4, top_k=100000, min_size=64, scales=(1.0, 0.5),
                        refine_radius=0)  # fmt: skip
    f = extract(counted, crop, None, cfg)
    # levels 256 and 128; the context of level 1 is level 0.5 (not run again), level 0.5's
    # context is the 64 x 64 image
    assert counted.sizes == [(256, 256), (128, 128), (64, 64)]
    context = f.descriptors[:, 128:] * np.sqrt(1.5 / 0.5)
    for s in (1.0, 0.5):
        idx = np.flatnonzero(np.isclose(f.scales, 1.0 / s))
        assert len(idx) > 10
        hs, ws = level_shape(crop.shape, 0.5 * s)
        pos = input_to_level(f.keypoints[idx], crop.shape, (hs, ws))
        with torch.inference_mode():
            maps = net.dense_maps(torch.from_numpy(resize_image(crop, (hs, ws)))[None, None])
            want = descriptors_at(maps, np.clip(pos, 0, [ws - 1, hs - 1])).numpy()
        np.testing.assert_allclose(context[idx], want, atol=1e-5)


def test_tiled_levels_are_not_kept_for_the_context(net, crop):
    counted = _Counting(net)
    cfg = ExtractConfig(rep_threshold=0.4, top_k=100000, min_size=64, scales=(1.0, 0.5),
                        refine_radius=0, tile_size=96, tile_overlap=32)  # fmt: skip
    extract(counted, crop, None, cfg)
    # level 0.5 (128 px) runs as tiles: the context of level 1 runs its own tiles
    assert len(counted.sizes) > 2 + 4


def test_pytorch_is_the_default_runtime(net, monkeypatch):
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    assert runtime.runtime_choice() == "torch"
    assert runtime.attach(net) is None
    assert runtime.backbone_for(net, torch.zeros(1, 1, 8, 8)) is None


ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnx_backbone_gives_pytorch_features_in_strips(net, tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    rt = runtime.attach(net, choice="onnx")
    assert rt is not None and list(tmp_path.glob("onnx/*/stem.onnx"))
    x = torch.rand(1, 1, 203, 157, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = net.low_res_features(x, inference=True)
        maps_onnx = net.dense_maps(x)
        rt.strip_pixels = 16 * 157  # 16-row strips: 13 of them, odd height
        got = net.backbone(x)
        runtime._runtimes.pop(net)
        maps_torch = net.dense_maps(x)
    assert got.shape == want.shape == (1, 128, 101, 78)
    tol = 1e-6 * float(want.abs().max()) * 10
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=tol)
    np.testing.assert_allclose(maps_onnx.repeatability, maps_torch.repeatability, atol=1e-5)
    np.testing.assert_allclose(maps_onnx.reliability, maps_torch.reliability, atol=1e-5)


def test_changed_weights_fall_back_to_pytorch(net, tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path))
    rt = runtime.attach(net, choice="onnx")
    x = torch.zeros(1, 1, 32, 32)
    assert runtime.backbone_for(net, x) is rt
    with torch.no_grad():
        net.blocks[0].conv.weight.mul_(2.0)  # as a training step would
    assert runtime.backbone_for(net, x) is None
    # a new export for the new weights (another fingerprint, another cache folder)
    assert runtime.attach(net, choice="onnx") is not None
    assert len(list(tmp_path.glob("onnx/*/trunk.onnx"))) == 2
