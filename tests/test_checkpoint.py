"""Checkpoints: sarreg format round trip, one-line errors, and naver R2D2 import."""

from __future__ import annotations

import collections
import hashlib
import json
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch import nn

from sarreg.errors import CheckpointError, OutputError
from sarreg.model import (
    build_model,
    default_model_path,
    import_naver,
    load_checkpoint,
    load_default_model,
    load_model,
    save_checkpoint,
)
from sarreg.model.checkpoint import MODEL_ENV, naver_op_indices
from sarreg.model.r2d2 import layer_specs

LAYOUT = Path(__file__).parent / "data" / "naver_checkpoint_layout.json"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _umbra(data_dir, rows=36, cols=42, row_off=1200, col_off=300) -> torch.Tensor:
    with rasterio.open(data_dir / "umbra_mount_yasur.tif") as ds:
        img = ds.read(1, window=Window(col_off, row_off, cols, rows)).astype(np.float32)
    return torch.from_numpy(img / 255.0)


def _opera_rgb(data_dir, rows=30, cols=34) -> torch.Tensor:
    """Three real OPERA dates as an RGB image in [0, 1] (log-scaled, NaN -> 0), (3, H, W)."""
    paths = sorted((data_dir / "opera_rtc_s1").glob("*_VH_cropped.tif"))[:3]
    chans = []
    for p in paths:
        with rasterio.open(p) as ds:
            a = ds.read(1, window=Window(150, 120, cols, rows))
        db = 10 * np.log10(np.where(np.isfinite(a) & (a > 0), a, 1e-4))
        chans.append(np.clip((db + 35) / 35, 0, 1).astype(np.float32))
    return torch.from_numpy(np.stack(chans))


def _perturbed(arch="fast_r2d2", seed=0, **kw):
    torch.manual_seed(seed)
    net = build_model(arch, **kw)
    with torch.no_grad():
        for b in net.blocks:
            if b.bn is not None:
                b.bn.running_mean.normal_(0, 0.05)
                b.bn.running_var.uniform_(0.5, 2)
    return net


@dataclass(frozen=True)
class _Prep:
    log_scale: bool = True
    percentiles: tuple[float, float] = (1.0, 99.0)


# ------------------------------------------------------------------------------ sarreg format


def test_round_trip_keeps_outputs_and_metadata(tmp_path, data_dir):
    net = _perturbed(seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    img = _umbra(data_dir)[None, None]
    net(img)["repeatability"].mean().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "sub" / "m.pt",
        net,
        meta={"name": "test-model", "val_tiles": ["a.tif", "b.tif"], "auc": 0.5},
        preprocess=_Prep(),
        training={"epoch": 4, "optimizer": opt.state_dict()},
    )
    assert path == tmp_path / "sub" / "m.pt"
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary files left
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "sarreg-checkpoint" and raw["config"]["arch"] == "fast_r2d2"

    ckpt = load_checkpoint(path)
    assert ckpt.source_format == "sarreg" and ckpt.arch == "fast_r2d2"
    assert ckpt.meta["name"] == "test-model" and ckpt.meta["val_tiles"] == ["a.tif", "b.tif"]
    assert "created" in ckpt.meta and "sarreg_version" in ckpt.meta
    assert ckpt.preprocess == {"log_scale": True, "percentiles": (1.0, 99.0)}
    assert ckpt.training["epoch"] == 4
    opt2 = torch.optim.Adam(ckpt.net.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt.training["optimizer"])
    assert not ckpt.net.training
    assert not any(p.requires_grad for p in ckpt.net.parameters())
    assert "test-model" in ckpt.summary()
    net.eval()
    with torch.inference_mode():
        a, b = net(img), ckpt.net(img)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_default_model_path_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    default = default_model_path()
    assert default.parent.name == "weights" and default.suffix == ".pt"
    assert default.parent.parent.name == "sarreg"
    path = save_checkpoint(tmp_path / "env.pt", build_model("r2d2", mchan=1, dim=16))
    monkeypatch.setenv(MODEL_ENV, str(path))
    assert default_model_path() == path
    net = load_model()
    assert net.arch == "r2d2" and net.dim == 16
    loaded = load_default_model()
    assert loaded.kwargs == {
        "in_channels": 1,
        "mchan": 1,
        "dim": 16,
        "relu22": False,
        "input_offset": False,
    }
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="not found") as err:
        load_checkpoint()
    assert err.value.exit_code == 13
    assert "missing.pt" in str(err.value) and "\n" not in str(err.value)


def _tweak(tmp_path, change) -> Path:
    path = save_checkpoint(tmp_path / "ok.pt", build_model("fast_r2d2", mchan=1, dim=16))
    obj = torch.load(path, weights_only=True)
    change(obj)
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    return bad


def _nan_weight(o):
    o["state_dict"]["blocks.2.conv.weight"][0, 0, 0, 0] = float("nan")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o: o["config"].update(arch="superpoint"), "unknown architecture 'superpoint'"),
        (lambda o: o.update(format_version=99), "format version 99"),
        (lambda o: o["config"].update(mchan=2), r"blocks\.0\.conv\.weight: \(8, 1, 3, 3\)"),
        (lambda o: o["state_dict"].pop("repeatability_head.bias"), "missing"),
        (lambda o: o["config"].update(colour=True), "unknown model settings"),
        (_nan_weight, "non-finite weights in blocks.2.conv.weight"),
        (lambda o: o.pop("format"), "not a sarreg model checkpoint"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(_tweak(tmp_path, change))
    assert "\n" not in str(err.value)


def test_not_a_checkpoint(data_dir):
    with pytest.raises(CheckpointError, match="cannot read model checkpoint"):
        load_checkpoint(data_dir / "s1_vv_grd_db.tif")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "sarreg-checkpoint", "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="not plain tensors.*refused for safety"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_errors(tmp_path):
    net = build_model("fast_r2d2", mchan=1, dim=16)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "m.pt", net)
    with pytest.raises(TypeError, match="meta.when"):
        save_checkpoint(tmp_path / "m.pt", net, meta={"when": object()})
    with pytest.raises(TypeError, match="tensor"):
        save_checkpoint(tmp_path / "m.pt", net, meta={"w": torch.zeros(1)})
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------------------------ naver import
#
# The reference below is the published network written from the paper's description as one
# flat list of modules (C = conv, B = affine-free batch norm, R = ReLU, P = 2x2 average pool),
# applied to ImageNet-normalized RGB. The converted sarreg net must reproduce it.

_OPS = {
    "fast_r2d2": "CBRCBRCBRPCBRCBRCBRCBCBC",
    "r2d2": "CBRCBRCBRCBRCBRCBRCBCBC",
}
_NAMES = {
    "faster2d2_WASF_N16": "fast_r2d2",
    "r2d2_WASF_N16": "r2d2",
    "r2d2_WASF_N8_big": "r2d2",
}


def _layout(name: str) -> dict:
    return json.loads(LAYOUT.read_text())["checkpoints"][name]


def _fake_naver(name: str, seed: int = 0) -> dict:
    """A checkpoint with the exact keys, shapes and top-level entries of a published file."""
    layout = _layout(name)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            state[key] = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    obj = {"net": layout["net"], "state_dict": state}
    if "training_losses" in layout["top_level_keys"]:
        obj["training_losses"] = collections.defaultdict(list, {"loss": [0.9, 0.8]})
    if "git" in layout["top_level_keys"]:
        obj["git"] = "commit 0123abcd"
    return obj


class _Reference(nn.Module):
    """The naver network as a flat op list, on RGB normalized with ImageNet statistics."""

    def __init__(self, name: str, state: dict) -> None:
        super().__init__()
        arch = _NAMES[name]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        mchan = state["ops.0.weight"].shape[0] // 8
        specs = iter(layer_specs(arch, mchan=mchan))  # dilations of the published nets
        ops = []
        for kind in _OPS[arch]:
            if kind == "C":
                spec = next(specs)
                k, d = spec.kernel, spec.dilation
                cin = ops[-1].num_features if ops and isinstance(ops[-1], nn.BatchNorm2d) else None
                w = state[f"ops.{len(ops)}.weight"]
                assert cin in (None, w.shape[1])
                ops.append(
                    nn.Conv2d(w.shape[1], w.shape[0], k, padding=(k - 1) * d // 2, dilation=d)
                )
            elif kind == "B":
                ops.append(nn.BatchNorm2d(ops[-1].out_channels, affine=False))
            elif kind == "R":
                ops.append(nn.ReLU())
            else:
                ops.append(nn.AvgPool2d(2))
        self.ops = nn.ModuleList(ops)
        self.clf = nn.Conv2d(state["clf.weight"].shape[1], 2, 1)
        self.sal = nn.Conv2d(state["sal.weight"].shape[1], 1, 1)
        self.load_state_dict(state, strict=True)
        self.eval()

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (rgb - MEAN) / STD
        for op in self.ops:
            x = op(x)
        x = F.interpolate(x, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        ur = F.softplus(self.sal(x**2))
        return {
            "descriptors": F.normalize(x, dim=1),
            "reliability": F.softmax(self.clf(x**2), dim=1)[:, 1:2],
            "repeatability": ur / (1 + ur),
        }


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_layout_matches_our_layer_order(name):
    """The published op indices are those our architecture description predicts."""
    layout = _layout(name)["state_dict"]
    keys = {k.removeprefix("module.") for k in layout}
    convs = sorted(int(k.split(".")[1]) for k in keys if k.startswith("ops.") and "bias" in k)
    bns = sorted(int(k.split(".")[1]) for k in keys if k.endswith("running_mean"))
    mchan = layout[next(k for k in layout if k.endswith("ops.0.weight"))][0] // 8
    assert naver_op_indices(_NAMES[name], mchan=mchan) == (convs, bns)
    ops = _OPS[_NAMES[name]]
    assert [i for i, c in enumerate(ops) if c == "C"] == convs
    assert [i for i, c in enumerate(ops) if c == "B"] == bns


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_import_naver_grey_equals_published_net(tmp_path, data_dir, name):
    src = tmp_path / f"{name}.pt"
    obj = _fake_naver(name)
    torch.save(obj, src)
    ref = _Reference(name, obj["state_dict"])
    dst = tmp_path / "converted.pt"
    ckpt = import_naver(src, dst)
    assert ckpt.arch == _NAMES[name] and ckpt.config["in_channels"] == 1
    assert ckpt.source_format == "naver" and "CC BY-NC-SA" in ckpt.meta["license"]
    grey = _umbra(data_dir)
    with torch.inference_mode():
        expect = ref(grey.expand(1, 3, -1, -1))
        got = ckpt.net(grey[None, None])
    for key in expect:
        torch.testing.assert_close(got[key], expect[key], atol=2e-5, rtol=1e-4)
    # the written sarreg checkpoint and on-the-fly loading give the same net
    again = load_checkpoint(dst)
    assert again.source_format == "sarreg" and again.meta["license"] == ckpt.meta["license"]
    direct = load_checkpoint(src)
    assert direct.source_format == "naver"
    with torch.inference_mode():
        out = again.net.dense_maps(grey)
        torch.testing.assert_close(direct.net(grey[None, None])["reliability"], got["reliability"])
    torch.testing.assert_close(out.repeatability, expect["repeatability"], atol=2e-5, rtol=1e-4)


def test_import_naver_rgb(tmp_path, data_dir):
    name = "faster2d2_WASF_N16"
    obj = _fake_naver(name, seed=5)
    src = tmp_path / "n.pt"
    torch.save(obj, src)
    ckpt = import_naver(src, channels=3)
    rgb = _opera_rgb(data_dir)[None]
    with torch.inference_mode():
        expect = _Reference(name, obj["state_dict"])(rgb)
        got = ckpt.net(rgb)
    for key in expect:
        torch.testing.assert_close(got[key], expect[key], atol=2e-5, rtol=1e-4)


def test_import_naver_refuses_inconsistent_or_unsafe_files(tmp_path):
    obj = _fake_naver("r2d2_WASF_N16")
    obj["net"] = "Fast_Quad_L2Net_ConfCFS()"
    torch.save(obj, tmp_path / "mislabelled.pt")
    with pytest.raises(CheckpointError, match="layers are those of r2d2"):
        import_naver(tmp_path / "mislabelled.pt")

    obj = _fake_naver("r2d2_WASF_N8_big")
    obj["net"] = "Quad_L2Net_ConfCFS(mchan=4)"
    torch.save(obj, tmp_path / "width.pt")
    with pytest.raises(CheckpointError, match="mchan=4"):
        import_naver(tmp_path / "width.pt")

    obj = _fake_naver("faster2d2_WASF_N16")
    for key in ("clf.weight", "clf.bias", "sal.weight", "sal.bias"):
        del obj["state_dict"][key]
    obj["state_dict"]["sal.weight"] = torch.zeros(1, 128, 1, 1)
    torch.save(obj, tmp_path / "noheads.pt")
    with pytest.raises(CheckpointError, match="without confidence heads"):
        import_naver(tmp_path / "noheads.pt")

    obj = _fake_naver("faster2d2_WASF_N16")
    obj["git"] = types.SimpleNamespace(commit="0123")
    torch.save(obj, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="trusted=True"):
        import_naver(tmp_path / "odd.pt")
    assert import_naver(tmp_path / "odd.pt", trusted=True).arch == "fast_r2d2"

    save_checkpoint(tmp_path / "ours.pt", build_model("fast_r2d2", mchan=1, dim=16))
    with pytest.raises(CheckpointError, match="not a naver R2D2 checkpoint"):
        import_naver(tmp_path / "ours.pt")
