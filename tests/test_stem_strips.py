"""The Fast-R2D2 stem run on horizontal strips at inference gives the whole image's features."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window


@pytest.fixture(scope="module")
def loaded():
    from sarreg.pipeline import load_model

    return load_model(None)


@pytest.mark.parametrize("shape", [(203, 120), (96, 75), (64, 64)])
def test_strips_equal_the_whole_image(data_dir, loaded, shape):
    from sarreg import preprocess

    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        raw = ds.read(1, window=Window(400, 300, shape[1], shape[0])).astype(np.float32)
    pre = preprocess.PreprocessConfig.from_dict(loaded.preprocess or {})
    img, _ = preprocess.preprocess(raw, np.ones(raw.shape, bool), "display", pre, name="crop")
    x = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    net = loaded.net
    with torch.inference_mode():
        whole = net.low_res_features(x, inference=True, strip_pixels=0)
        strips = net.low_res_features(x, inference=True, strip_pixels=16 * shape[1])
    assert strips.shape == whole.shape == (1, net.dim, shape[0] // 2, shape[1] // 2)
    assert strips.is_contiguous(memory_format=torch.channels_last)
    scale = float(whole.abs().max())
    np.testing.assert_allclose(strips.numpy(), whole.numpy(), atol=1e-5 * scale, rtol=0)
