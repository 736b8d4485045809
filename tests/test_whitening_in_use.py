"""The shipped whitening is what extraction returns: descriptors from ``extract`` with the
bundled model are the network's raw descriptors projected by the stored whitening, computed
here independently in numpy from the checkpoint's ``whitening.mean`` and ``whitening.matrix``."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from sarreg.features import ExtractConfig, extract
from sarreg.model.checkpoint import load_default_model
from sarreg.model.r2d2 import descriptors_at


@pytest.fixture(scope="module")
def shipped():
    return load_default_model()


@pytest.fixture(scope="module")
def image(data_dir, shipped) -> tuple[np.ndarray, np.ndarray]:
    from sarreg import preprocess

    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        data = ds.read(1, window=((700, 956), (600, 856)))
    cfg = preprocess.PreprocessConfig.from_dict(shipped.preprocess or {})
    return preprocess.preprocess(data, np.ones(data.shape, bool), "amplitude", cfg)


def test_extracted_descriptors_are_the_whitened_network_descriptors(shipped, image):
    net = shipped.net
    img, mask = image
    cfg = ExtractConfig(scales=(1.0,), context_scale=None, refine_radius=0, top_k=500,
                        progress=False)  # fmt: skip
    feats = extract(net, img, mask, cfg)
    assert len(feats) == 500
    state = net.state_dict()
    mean = state["whitening.mean"].double().numpy()
    matrix = state["whitening.matrix"].double().numpy()
    assert np.abs(matrix - np.eye(len(mean))).max() > 0.1  # a real projection is shipped
    with torch.inference_mode():
        maps = net.dense_maps(torch.from_numpy(np.ascontiguousarray(img))[None, None])
    raw = descriptors_at(maps, feats.keypoints[:, :2].astype(np.float64)).double().numpy()
    expected = (raw - mean) @ matrix.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(feats.descriptors, expected, atol=2e-4)
    # and the projection is far from a no-op on these descriptors
    cos = np.sum(raw / np.linalg.norm(raw, axis=1, keepdims=True) * expected, axis=1)
    assert np.median(cos) < 0.98, np.median(cos)  # measured 0.952
