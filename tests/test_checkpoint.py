"""Checkpoints: sarreg format round trip, one-line errors, and naver R2D2 import."""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from test_naver_reference import NETS, fake_naver, layout, op_sequence, reference_forward

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
from sarreg.model.checkpoint import MODEL_ENV, NAVER_EXTRACT, NAVER_PREPROCESS, naver_op_indices


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


#: the naver-layout checkpoint builder (other test modules import it from here)
_fake_naver = fake_naver


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
        "pool": "avg",
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
# The reference (tests/test_naver_reference.py) is the published network written from the
# paper as functional code on the checkpoint's own state dict, applied to ImageNet-normalized
# RGB. The converted sarreg net must reproduce it.

_NAMES = {name: {"fast": "fast_r2d2", "standard": "r2d2"}[net] for name, net in NETS.items()}
_OPS = {
    "fast_r2d2": "".join(op[0].upper() for op in op_sequence("fast")),
    "r2d2": "".join(op[0].upper() for op in op_sequence("standard")),
}


def _layout(name: str) -> dict:
    return layout(name)


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_layout_matches_our_layer_order(name):
    """The published op indices are those our architecture description predicts."""
    lay = _layout(name)["state_dict"]
    keys = {k.removeprefix("module.") for k in lay}
    convs = sorted(int(k.split(".")[1]) for k in keys if k.startswith("ops.") and "bias" in k)
    bns = sorted(int(k.split(".")[1]) for k in keys if k.endswith("running_mean"))
    mchan = lay[next(k for k in lay if k.endswith("ops.0.weight"))][0] // 8
    assert naver_op_indices(_NAMES[name], mchan=mchan) == (convs, bns)
    ops = _OPS[_NAMES[name]]
    assert [i for i, c in enumerate(ops) if c == "C"] == convs
    assert [i for i, c in enumerate(ops) if c == "B"] == bns


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_import_naver_grey_equals_published_net(tmp_path, data_dir, name):
    src = tmp_path / f"{name}.pt"
    obj = _fake_naver(name)
    torch.save(obj, src)
    dst = tmp_path / "converted.pt"
    ckpt = import_naver(src, dst)
    assert ckpt.arch == _NAMES[name] and ckpt.config["in_channels"] == 1
    assert ckpt.config["pool"] == "max"
    assert ckpt.source_format == "naver" and "CC BY-NC-SA" in ckpt.meta["license"]
    grey = _umbra(data_dir)
    with torch.inference_mode():
        expect = reference_forward(obj["state_dict"], NETS[name], grey.expand(1, 3, -1, -1))
        got = ckpt.net(grey[None, None])
    for key in expect:
        torch.testing.assert_close(got[key], expect[key], atol=2e-5, rtol=1e-4)
    # the written sarreg checkpoint and on-the-fly loading give the same net and convention
    again = load_checkpoint(dst)
    assert again.source_format == "sarreg" and again.meta["license"] == ckpt.meta["license"]
    direct = load_checkpoint(src)
    assert direct.source_format == "naver"
    for loaded in (again, direct):
        assert loaded.config == ckpt.config
        assert loaded.preprocess == NAVER_PREPROCESS and loaded.extract == NAVER_EXTRACT
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
        expect = reference_forward(obj["state_dict"], "fast", rgb)
        got = ckpt.net(rgb)
    for key in expect:
        torch.testing.assert_close(got[key], expect[key], atol=2e-5, rtol=1e-4)


def test_import_naver_records_the_input_convention(tmp_path):
    """An import records the 8-bit display preprocessing and the authors' pyramid, which
    extract_config applies over a base config; authors_extract=False records none."""
    from sarreg.features import ExtractConfig
    from sarreg.preprocess import PreprocessConfig

    src = tmp_path / "n.pt"
    torch.save(_fake_naver("faster2d2_WASF_N16"), src)
    ckpt = import_naver(src, tmp_path / "c.pt")
    assert PreprocessConfig.from_dict(ckpt.preprocess).scaling == "8bit"
    cfg = ckpt.extract_config(ExtractConfig(top_k=123))
    assert (cfg.scale_factor, cfg.min_size, cfg.max_size) == (2**0.25, 256, 1024)
    assert cfg.rank == "score" and cfg.context_scale is None and cfg.top_k == 123
    assert ckpt.meta["input_normalization"]["mean"] == [0.485, 0.456, 0.406]
    plain = import_naver(src, tmp_path / "p.pt", authors_extract=False)
    assert plain.extract is None and load_checkpoint(tmp_path / "p.pt").extract is None
    assert plain.extract_config() == ExtractConfig()
    assert load_checkpoint(tmp_path / "p.pt").preprocess == NAVER_PREPROCESS
    # sarreg's own models record neither and keep sarreg's defaults
    ours = load_checkpoint(save_checkpoint(tmp_path / "o.pt", build_model("fast_r2d2", mchan=1)))
    assert ours.extract is None and ours.config["pool"] == "avg"
    # a recorded setting ExtractConfig does not know is a one-line checkpoint error
    bad = torch.load(tmp_path / "c.pt", weights_only=True)
    bad["extract"]["pyramid"] = "x"
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="invalid extraction settings"):
        load_checkpoint(tmp_path / "bad.pt").extract_config()


def test_checkpoints_without_pool_average_pool(tmp_path):
    """Files written before the pooling was recorded load as average-pooling nets."""
    net = _perturbed(seed=2, mchan=1, dim=16)
    path = save_checkpoint(tmp_path / "m.pt", net)
    obj = torch.load(path, weights_only=True)
    del obj["config"]["pool"]
    torch.save(obj, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.config["pool"] == "avg"
    x = torch.rand(1, 1, 20, 22, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.inference_mode():
        torch.testing.assert_close(
            old.net(x)["repeatability"], net(x)["repeatability"], atol=0, rtol=0
        )


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
