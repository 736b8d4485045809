"""Imported naver R2D2 checkpoints against an independent reference written from the paper.

The reference network below is written from the published architecture (Revaud et al. 2019,
R2D2; L2-Net with its strides replaced by dilations) and the key layout of the published
checkpoints (``tests/data/naver_checkpoint_layout.json``), as plain functional code on the
checkpoint's own state dict. It shares nothing with sarreg's network code (no ``layer_specs``,
no ``R2D2Net``): its widths, kernels, dilations, pooling and heads are written out here, so a
change to sarreg's architecture description shows up as a difference.

The reference extraction applies the authors' input convention (8-bit image / 255, replicated
to RGB, ImageNet-normalized) and their multi-scale method (levels ``2^(-i/4)`` with the larger
side in 256..1024 px, local maxima of the repeatability ranked by reliability x repeatability)
to a small real 8-bit SAR image, and is compared with ``sarreg extract --model``.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

LAYOUT = Path(__file__).parent / "data" / "naver_checkpoint_layout.json"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

#: published checkpoints (layout file) -> network
NETS = {
    "faster2d2_WASF_N16": "fast",
    "r2d2_WASF_N16": "standard",
    "r2d2_WASF_N8_big": "standard",
}
#: output widths of the nine convolutions in units of mchan (the last one is the descriptor
#: dimension, 128, whatever mchan)
WIDTHS = (8, 8, 16, 16, 32, 32, 32, 32)
KERNELS = (3, 3, 3, 3, 3, 3, 2, 2, 2)
#: L2-Net has a stride of 2 at its 3rd and 5th convolutions and ends with an 8x8 convolution,
#: replaced here by three 2x2 ones. R2D2 removes the strides and doubles the dilation of every
#: later layer instead; the Fast variant keeps the first reduction as a 2x2 max pooling after
#: the 3rd convolution, so its dilations double once less.
DILATIONS = {
    "standard": (1, 1, 1, 2, 2, 4, 4, 8, 16),
    "fast": (1, 1, 1, 1, 1, 2, 2, 4, 8),
}
#: the authors' multi-scale extraction
SCALE_FACTOR = 2**0.25
MIN_SIZE, MAX_SIZE = 256, 1024


def layout(name: str) -> dict:
    return json.loads(LAYOUT.read_text())["checkpoints"][name]


def fake_naver(name: str, seed: int = 0) -> dict:
    """A checkpoint with the exact keys, shapes and top-level entries of a published file,
    random weights (fan-in scaled) and plausible batch-norm statistics."""
    lay = layout(name)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in lay["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            state[key] = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    obj = {"net": lay["net"], "state_dict": state}
    if "training_losses" in lay["top_level_keys"]:
        obj["training_losses"] = collections.defaultdict(list, {"loss": [0.9, 0.8]})
    if "git" in lay["top_level_keys"]:
        obj["git"] = "commit 0123abcd"
    return obj


def op_sequence(net: str) -> list[str]:
    """The flat module list of the published networks: per convolution, a batch norm (not
    after the last), a ReLU (after the six 3x3 convolutions) and, in the Fast variant, a 2x2
    max pooling after the third convolution's ReLU."""
    ops = []
    for i in range(9):
        ops.append("conv")
        if i < 8:
            ops.append("bn")
        if i < 6:
            ops.append("relu")
        if net == "fast" and i == 2:
            ops.append("maxpool")
    return ops


def reference_forward(state: dict, net: str, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The published network on ``rgb`` ``(B, 3, H, W)`` in [0, 1] (ImageNet-normalized here).

    Returns ``descriptors`` ``(B, 128, H', W')`` (unit norm), ``repeatability`` and
    ``reliability`` ``(B, 1, H', W')``; ``H' = H`` except for the Fast variant on odd sizes,
    where the x2 upsampling gives ``2 (H // 2)``.
    """
    state = {k.removeprefix("module."): v.detach().cpu().float() for k, v in state.items()}
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    k = 0
    for idx, op in enumerate(op_sequence(net)):
        if op == "conv":
            w, b = state[f"ops.{idx}.weight"], state[f"ops.{idx}.bias"]
            assert w.shape[-1] == KERNELS[k]
            d = DILATIONS[net][k]
            x = F.conv2d(x, w, b, padding=(KERNELS[k] - 1) * d // 2, dilation=d)
            k += 1
        elif op == "bn":
            mu, var = state[f"ops.{idx}.running_mean"], state[f"ops.{idx}.running_var"]
            x = F.batch_norm(x, mu, var, training=False, eps=1e-5)
        elif op == "relu":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2)
    if net == "fast":
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    sq = x * x
    reliability = F.softmax(F.conv2d(sq, state["clf.weight"], state["clf.bias"]), dim=1)
    ur = F.softplus(F.conv2d(sq, state["sal.weight"], state["sal.bias"]))
    return {
        "descriptors": F.normalize(x, p=2, dim=1),
        "repeatability": ur / (1 + ur),
        "reliability": reliability[:, 1:2],
    }


def _converted(tmp_path, name, seed=0, channels=1):
    from sarreg.model import import_naver

    obj = fake_naver(name, seed=seed)
    src = tmp_path / f"{name}.pt"
    torch.save(obj, src)
    return obj["state_dict"], import_naver(src, channels=channels)


def _assert_outputs_equal(
    got: dict, expect: dict, rows: int | None = None, cols: int | None = None
):
    for key in ("descriptors", "repeatability", "reliability"):
        a = got[key][..., :rows, :cols]
        torch.testing.assert_close(a, expect[key], atol=1e-5, rtol=0, msg=key)


# ------------------------------------------------------------------------------ the network


@pytest.mark.parametrize("name", sorted(NETS))
def test_reference_op_order_is_the_published_layout(name):
    """The reference's module list puts every convolution and batch norm at the index where
    the published state dict has its weights (the gaps are the ReLUs and the pooling)."""
    ops = op_sequence(NETS[name])
    keys = {k.removeprefix("module.") for k in layout(name)["state_dict"]}
    with_weights = {int(k.split(".")[1]) for k in keys if k.startswith("ops.")}
    assert {i for i, op in enumerate(ops) if op in ("conv", "bn")} == with_weights
    for i, op in enumerate(ops):
        assert (f"ops.{i}.weight" in keys) == (op == "conv")
        assert (f"ops.{i}.running_mean" in keys) == (op == "bn")


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("shape", [(40, 46), (37, 43)])
def test_imported_net_equals_reference(tmp_path, name, shape):
    """Random weights in the published layout, loaded into sarreg's converter and into the
    reference: equal outputs on a random grey image (odd sizes: where the reference's x2
    upsampling has pixels), through both sarreg's training forward and its inference path."""
    state, ckpt = _converted(tmp_path, name)
    net = NETS[name]
    assert ckpt.config["pool"] == "max"
    grey = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expect = reference_forward(state, net, grey.expand(1, 3, -1, -1))
        got = ckpt.net(grey)
        maps = ckpt.net.dense_maps(grey)
    rows, cols = expect["repeatability"].shape[-2:]
    if net == "fast":
        assert (rows, cols) == (2 * (shape[0] // 2), 2 * (shape[1] // 2))
    else:
        assert (rows, cols) == shape
    _assert_outputs_equal(got, expect, rows, cols)
    dense = {"repeatability": maps.repeatability, "reliability": maps.reliability}
    yy, xx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    xy = torch.stack([xx.ravel(), yy.ravel()], 1)
    desc = ckpt.net.descriptors_at(maps, xy).T.reshape(1, -1, rows, cols)
    _assert_outputs_equal({**dense, "descriptors": desc}, expect, rows, cols)


def test_imported_rgb_net_equals_reference(tmp_path):
    state, ckpt = _converted(tmp_path, "faster2d2_WASF_N16", seed=5, channels=3)
    rgb = torch.rand(2, 3, 34, 38, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        _assert_outputs_equal(ckpt.net(rgb), reference_forward(state, "fast", rgb))


def test_pooling_is_max_for_imports_and_avg_for_sarreg_models(tmp_path):
    """The reference tells max from average pooling: the converted net set to average-pool
    (sarreg's own Fast-R2D2) no longer matches it."""
    from sarreg.model import R2D2Net, build_model

    state, ckpt = _converted(tmp_path, "faster2d2_WASF_N16")
    assert build_model("fast_r2d2").config["pool"] == "avg"
    avg = R2D2Net(**{**ckpt.config, "pool": "avg"})
    avg.load_state_dict(ckpt.net.state_dict())
    avg.eval()
    grey = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expect = reference_forward(state, "fast", grey.expand(1, 3, -1, -1))
        diff = (avg(grey)["repeatability"] - expect["repeatability"]).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("channels", [1, 3])
def test_folded_normalization_equals_explicit(tmp_path, channels):
    """The first convolution of the converted net on the raw image equals the published
    first convolution on the explicitly ImageNet-normalized RGB image (zero padding in the
    normalized space), at every pixel including the border."""
    state, ckpt = _converted(tmp_path, "faster2d2_WASF_N16", seed=4, channels=channels)
    gen = torch.Generator().manual_seed(4)
    img = torch.rand(1, channels, 21, 26, generator=gen)
    rgb = img.expand(1, 3, -1, -1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    expect = F.conv2d((rgb - mean) / std, state["ops.0.weight"], state["ops.0.bias"], padding=1)
    seen = []
    hook = ckpt.net.blocks[0].bn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            ckpt.net(img)
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], expect, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ extraction


def reference_levels(shape: tuple[int, int]) -> list[float]:
    """The authors' pyramid: scales ``2^(-i/4)`` whose larger level side is in 256..1024."""
    scales, i = [], 0
    while True:
        s = SCALE_FACTOR**-i
        side = max(round(shape[0] * s), round(shape[1] * s))
        if side < MIN_SIZE:
            return scales
        if side <= MAX_SIZE:
            scales.append(s)
        i += 1


def reference_extract(state, net, u8: np.ndarray, top_k: int):
    """Keypoints ``(N, 3)`` (x, y, 1 / scale; input pixel centres), scores ``(N,)`` and
    descriptors ``(N, 128)`` of an 8-bit image by the method, best first. Levels are resized
    from the [0, 1] image with area interpolation (sarreg's pyramid resampling)."""
    grey = u8.astype(np.float32) / 255.0
    h, w = grey.shape
    xy, inv, score, desc = [], [], [], []
    for s in reference_levels((h, w)):
        hs, ws = round(h * s), round(w * s)
        level = (
            grey if (hs, ws) == (h, w) else cv2.resize(grey, (ws, hs), interpolation=cv2.INTER_AREA)
        )
        rgb = torch.from_numpy(level)[None, None].expand(1, 3, -1, -1)
        with torch.inference_mode():
            out = reference_forward(state, net, rgb)
        rep, rel = out["repeatability"][0, 0], out["reliability"][0, 0]
        peaks = rep == F.max_pool2d(rep[None, None], 3, stride=1, padding=1)[0, 0]
        yy, xx = torch.nonzero(peaks, as_tuple=True)
        score.append(rel[yy, xx].double().numpy() * rep[yy, xx].double().numpy())
        desc.append(out["descriptors"][0][:, yy, xx].T.numpy())
        pos = np.stack([xx.numpy(), yy.numpy()], 1).astype(np.float64)
        xy.append((pos + 0.5) * [w / ws, h / hs] - 0.5)
        inv.append(np.full(len(pos), 1.0 / s))
    xy, inv, score, desc = (np.concatenate(a) for a in (xy, inv, score, desc))
    order = np.argsort(-score, kind="stable")[:top_k]
    kp = np.concatenate([xy, inv[:, None]], 1)[order]
    return kp, score[order], desc[order]


@pytest.fixture(scope="module")
def umbra_u8(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 362 x 300 crop of the real 8-bit Umbra GEC product as a GeoTIFF (pyramid levels of
    even sizes, 3 of them within 256..1024 px)."""
    src = Path(__file__).resolve().parents[1] / "data" / "umbra_mount_yasur.tif"
    out = tmp_path_factory.mktemp("umbra") / "crop.tif"
    win = Window(700, 900, 362, 300)
    with rasterio.open(src) as ds:
        data = ds.read(1, window=win)
        profile = ds.profile | {"width": 362, "height": 300, "transform": ds.window_transform(win)}
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
    assert data.dtype == np.uint8
    return out, data


@pytest.mark.parametrize("via", ["naver file", "converted"])
def test_extract_cli_equals_reference_extraction(tmp_path, umbra_u8, via, capsys):
    """``sarreg extract --model`` with an imported checkpoint gives the keypoints, scores and
    descriptors of the method applied with the authors' input convention and pyramid."""
    from sarreg.cli import main

    path, u8 = umbra_u8
    obj = fake_naver("faster2d2_WASF_N16", seed=7)
    model = tmp_path / "faster2d2.pt"
    torch.save(obj, model)
    if via == "converted":
        conv = tmp_path / "converted.pt"
        assert main(["models", "convert", str(model), str(conv)]) == 0
        model = conv
    out = tmp_path / "f.npz"
    top_k = 600
    args = ["extract", str(path), "-o", str(out), "--model", str(model), "--top-k", str(top_k)]
    assert main([*args, "--no-progress"]) == 0
    capsys.readouterr()
    with np.load(out) as z:
        kp, desc, score = z["keypoints"], z["descriptors"], z["scores"]
    kp_ref, score_ref, desc_ref = reference_extract(obj["state_dict"], "fast", u8, top_k)
    assert len(kp) == len(kp_ref) == top_k
    assert desc.shape[1] == 128  # the network's descriptors alone, no context part
    np.testing.assert_allclose(np.unique(kp[:, 2]), [1.0, 2**0.25, 2**0.5], rtol=1e-6)
    np.testing.assert_allclose(kp, kp_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(score, score_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(desc, desc_ref, atol=1e-5, rtol=0)


def test_imported_extract_settings_are_the_authors(tmp_path):
    """The recorded pyramid is the authors' for any image size, and the preprocessing is the
    8-bit display image as it is."""
    from sarreg.features import pyramid_scales
    from sarreg.preprocess import PreprocessConfig, preprocess

    _, ckpt = _converted(tmp_path, "faster2d2_WASF_N16")
    cfg = ckpt.extract_config()
    for shape in [(300, 362), (1000, 700), (2000, 3000), (4096, 4096)]:
        np.testing.assert_allclose(pyramid_scales(shape, cfg), reference_levels(shape), rtol=1e-12)
    pre = PreprocessConfig.from_dict(ckpt.preprocess)
    u8 = np.random.default_rng(0).integers(0, 256, (40, 50)).astype(np.float32)
    img, _ = preprocess(u8, np.ones(u8.shape, bool), "display", pre)
    np.testing.assert_array_equal(img, u8 / np.float32(255))


def test_8bit_scaling_of_other_data_rounds_the_percentile_stretch(data_dir):
    """Data that is not an 8-bit display product (here real dB values) becomes the 8-bit
    export of sarreg's stretch; 'percentile' (sarreg's models) is unchanged by the option."""
    from sarreg.errors import ConfigError
    from sarreg.io import read_raster
    from sarreg.preprocess import PreprocessConfig, preprocess_raster

    r = read_raster(data_dir / "s1_vv_grd_db.tif")
    assert r.kind == "db"
    stretched, kp = preprocess_raster(r)
    as8, kp8 = preprocess_raster(r, PreprocessConfig(scaling="8bit"))
    valid = r.mask
    np.testing.assert_array_equal(as8[valid], np.round(stretched[valid] * 255) / np.float32(255))
    assert not np.array_equal(as8, stretched)
    np.testing.assert_array_equal(kp8, kp)
    with pytest.raises(ConfigError, match="scaling"):
        PreprocessConfig.from_dict({"scaling": "jpeg"})


def test_convert_extract_defaults_and_info(tmp_path, capsys):
    from sarreg.cli import main
    from sarreg.model import build_model, load_checkpoint, save_checkpoint

    src = tmp_path / "faster2d2.pt"
    torch.save(fake_naver("faster2d2_WASF_N16"), src)
    assert main(["models", "info", str(src)]) == 0
    info = capsys.readouterr().out
    assert "pool=max" in info and '"scaling": "8bit"' in info and '"min_size": 256' in info
    plain = tmp_path / "plain.pt"
    assert main(["models", "convert", str(src), str(plain), "--extract-defaults", "sarreg"]) == 0
    ckpt = load_checkpoint(plain)
    assert ckpt.extract is None and ckpt.preprocess == {"scaling": "8bit"}
    assert ckpt.config["pool"] == "max"
    capsys.readouterr()
    assert main(["models", "info", str(plain)]) == 0
    assert "extract: sarreg defaults" in capsys.readouterr().out
    ours = save_checkpoint(tmp_path / "ours.pt", build_model("fast_r2d2", mchan=1, dim=16))
    args = ["models", "convert", str(ours), str(tmp_path / "o.pt"), "--extract-defaults"]
    for value, message in (("authors", "naver checkpoints only"), ("paper", "must be")):
        assert main([*args, value]) == 12
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o.pt").exists()


def test_extract_options_override_the_recorded_settings(tmp_path, umbra_u8, capsys):
    """--context and --scales win over an imported model's recorded settings."""
    from sarreg.cli import main

    path, _ = umbra_u8
    model = tmp_path / "faster2d2.pt"
    torch.save(fake_naver("faster2d2_WASF_N16", seed=7), model)
    out = tmp_path / "f.npz"
    args = ["extract", str(path), "-o", str(out), "--model", str(model), "--top-k", "50"]
    assert main([*args, "--no-progress", "--context", "--scales", "0.5"]) == 0
    capsys.readouterr()
    with np.load(out) as z:
        assert z["descriptors"].shape == (50, 256)
        np.testing.assert_allclose(z["keypoints"][:, 2], 2.0)
