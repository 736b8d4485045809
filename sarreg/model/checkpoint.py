"""Model checkpoints: sarreg's own format, the packaged default, and naver R2D2 imports.

A sarreg checkpoint is a ``torch.save`` of a plain dict, readable with
``torch.load(weights_only=True)`` (no code runs on load)::

    {
        "format": "sarreg-checkpoint",
        "format_version": 1,
        "config": {"arch", "in_channels", "mchan", "dim", "relu22", "input_offset",
                   "pool"},        # R2D2Net arguments; files without "pool" average-pool
        "state_dict": {name: tensor},      # float32, CPU
        "preprocess": dict | None,         # PreprocessConfig fields the model was trained with
        "extract": dict | None,            # ExtractConfig fields the model runs with by default
        "meta": dict,                      # provenance: sarreg_version, created, source, ...
        "training": dict | None,           # optional resume state (optimizer, epoch, ...)
    }

Checkpoints published with the R2D2 paper (RGB input normalized with ImageNet statistics) are
converted by :func:`import_naver`: the layer order is recovered from the state dict's op
indices, the Fast variant max-pools as the published network does, and the RGB normalization
is folded into the first convolution, so the converted net takes the ``[0, 1]`` grey image
(or RGB with ``channels=3``) and gives the same outputs. The import also records the input
convention of those networks: the 8-bit display image (``PreprocessConfig.scaling = '8bit'``,
:data:`NAVER_PREPROCESS`) and the authors' multi-scale extraction settings
(:data:`NAVER_EXTRACT`), which ``sarreg extract`` uses unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sarreg.errors import CheckpointError, OutputError
from sarreg.model.r2d2 import ARCHITECTURES, R2D2Net, layer_specs

log = logging.getLogger(__name__)

FORMAT = "sarreg-checkpoint"
FORMAT_VERSION = 1
#: file name of the packaged model in ``sarreg/weights/``
DEFAULT_MODEL_NAME = "fast_r2d2_sar.pt"
#: environment variable that overrides the packaged model
MODEL_ENV = "SARREG_MODEL"
#: input normalization of the naver R2D2 checkpoints (RGB in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CONFIG_KEYS = ("arch", "in_channels", "mchan", "dim", "relu22", "input_offset", "pool")
#: state-dict entries a checkpoint may lack (kept at their defaults): descriptor whitening
_OPTIONAL_PREFIX = "whitening."
_NAVER_NETS = {"Fast_Quad_L2Net_ConfCFS": "fast_r2d2", "Quad_L2Net_ConfCFS": "r2d2"}
#: 2x2 pooling of the published Fast network after its third convolution
NAVER_POOL = "max"
#: preprocessing of an imported naver checkpoint (``PreprocessConfig`` fields): the networks
#: were trained on 8-bit RGB photographs, read as ``value / 255``; the grey image is
#: replicated to RGB and ImageNet-normalized inside the converted first convolution
NAVER_PREPROCESS = {"scaling": "8bit"}
#: the authors' multi-scale extraction (``ExtractConfig`` fields): levels ``2^(-i/4)`` of the
#: image whose larger side is within 256..1024 px, keypoints = local maxima of the
#: repeatability ranked by reliability x repeatability, descriptors of the network alone
NAVER_EXTRACT = {
    "scale_factor": 2**0.25,
    "min_scale": 2.0**-6,
    "max_scale": 1.0,
    "min_size": 256,
    "max_size": 1024,
    "peaks": "repeatability",
    "rank": "score",
    "context_scale": None,
    "border": 0,
}


def _defaultdict_as_dict(default_factory: Any = None, *args: Any) -> dict:
    """Stand-in for ``collections.defaultdict`` while loading: a plain dict, factory dropped."""
    return {}


# Harmless extra globals found in naver files: the training-loss defaultdict (read as a plain
# dict, since torch's weights-only unpickler fills only plain dicts) and its factory types.
_NAVER_SAFE_GLOBALS = [
    (_defaultdict_as_dict, "collections.defaultdict"),
    list,
    dict,
    float,
    int,
    tuple,
    set,
    str,
]


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        net: the network, in ``eval()`` mode with gradients off, on the requested device.
        config: constructor arguments, ``R2D2Net(**config)``.
        meta: provenance (free-form, JSON-like).
        preprocess: the preprocessing settings the model was trained with, or None.
        extract: extraction settings (``ExtractConfig`` fields) the model runs with unless
            told otherwise, or None (sarreg's defaults); see :meth:`extract_config`.
        path: where it was read from.
        source_format: 'sarreg' or 'naver' (converted on load by :func:`import_naver`).
        training: resume state saved with the checkpoint, or None.
        sha256: hex digest of the file read (provenance for reports), or None.
    """

    net: R2D2Net
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None
    path: str = ""
    source_format: str = "sarreg"
    training: dict[str, Any] | None = None
    sha256: str | None = None
    extract: dict[str, Any] | None = None

    @property
    def arch(self) -> str:
        """Architecture name, e.g. 'fast_r2d2'."""
        return self.config["arch"]

    @property
    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments other than ``arch``: ``build_model(arch, **kwargs)``."""
        return {k: v for k, v in self.config.items() if k != "arch"}

    def extract_config(self, base: Any = None) -> Any:
        """``base`` (a :class:`sarreg.features.ExtractConfig`; default ``ExtractConfig()``)
        with the checkpoint's recorded extraction settings applied (:attr:`extract`).

        Raises :class:`CheckpointError` for recorded settings ``ExtractConfig`` does not have
        or accept.
        """
        from sarreg.features import ExtractConfig

        base = ExtractConfig() if base is None else base
        if not self.extract:
            return base
        try:
            return dataclasses.replace(base, **self.extract)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{self.path} records invalid extraction settings ({err})",
                "re-convert the model with `sarreg models convert`",
            ) from err

    def summary(self) -> str:
        """One line describing the model (architecture, size, provenance)."""
        n_params = sum(p.numel() for p in self.net.parameters())
        c = self.config
        name = self.meta.get("name") or Path(self.path).name
        return (
            f"{name}: {c['arch']} in_channels={c['in_channels']} mchan={c['mchan']} "
            f"dim={c['dim']} params={n_params} format={self.source_format}"
            f"{' whitened' if self.net.whitening.active else ''}"
        )


def default_model_path() -> Path:
    """Path of the model used when none is given: ``$SARREG_MODEL`` or the packaged weights.

    The path is returned whether or not the file exists; :func:`load_checkpoint` reports a
    missing file.
    """
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "weights" / DEFAULT_MODEL_NAME


def model_config(net: R2D2Net) -> dict[str, Any]:
    """Constructor arguments of ``net`` (``R2D2Net(**model_config(net))`` rebuilds it)."""
    config = getattr(net, "config", None)
    if not isinstance(config, dict) or set(config) != set(_CONFIG_KEYS):
        raise TypeError("net has no valid .config; build it with sarreg.model.R2D2Net")
    return dict(config)


def save_checkpoint(
    path: str | os.PathLike,
    net: R2D2Net,
    *,
    meta: dict[str, Any] | None = None,
    preprocess: Any = None,
    training: dict[str, Any] | None = None,
    extract: dict[str, Any] | None = None,
) -> Path:
    """Write ``net`` as a sarreg checkpoint, atomically (temporary file + rename).

    Args:
        path: destination ``.pt`` file; its folder is created; an existing file is replaced.
        net: the network (any device; stored as float32 on CPU).
        meta: provenance to store (JSON-like values: dict, list, str, int, float, bool, None);
            ``sarreg_version`` and ``created`` (UTC ISO time) are added unless given.
        preprocess: a ``PreprocessConfig`` (dataclass) or dict of its fields, or None.
        training: optional resume state (may hold tensors, e.g. an optimizer ``state_dict()``).
        extract: ``ExtractConfig`` fields the model runs with unless told otherwise (e.g.
            :data:`NAVER_EXTRACT`), or None.

    Returns the path written. Raises :class:`OutputError` when it cannot be written.
    """
    from sarreg import __version__

    path = Path(path)
    info = {"sarreg_version": __version__, "created": _utc_now()}
    info.update(meta or {})
    if dataclasses.is_dataclass(preprocess) and not isinstance(preprocess, type):
        preprocess = dataclasses.asdict(preprocess)
    if preprocess is not None and not isinstance(preprocess, dict):
        raise TypeError("preprocess must be a PreprocessConfig, a dict or None")
    _check_plain(info, "meta", allow_tensors=False)
    _check_plain(preprocess, "preprocess", allow_tensors=False)
    _check_plain(training, "training", allow_tensors=True)
    _check_plain(extract, "extract", allow_tensors=False)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model_config(net),
        "state_dict": {
            k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu())
            for k, v in net.state_dict().items()
        },
        "preprocess": preprocess,
        "extract": extract,
        "meta": info,
        "training": training,
    }
    _atomic_save(payload, path)
    log.info("saved checkpoint %s (%s)", path, payload["config"]["arch"])
    return path


def load_checkpoint(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint (sarreg format, or a naver R2D2 file converted on the fly).

    Args:
        path: checkpoint file; None = :func:`default_model_path`.
        device: where to put the network.

    Returns a :class:`Checkpoint` whose ``net`` is in ``eval()`` mode with gradients off.
    Raises :class:`CheckpointError` (missing/unreadable file, unknown format or architecture,
    weights that do not fit, non-finite weights).
    """
    path = Path(path) if path is not None else default_model_path()
    obj = _torch_load(path, trusted=False, extra_globals=_NAVER_SAFE_GLOBALS)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = _from_sarreg(obj, path)
    elif _looks_naver(obj):
        log.info("%s is a naver R2D2 checkpoint; converting it to a 1-channel model", path)
        ckpt = _from_naver(obj, path, channels=1)
    else:
        raise CheckpointError(
            f"{path} is not a sarreg model checkpoint",
            "pass a file written by `sarreg train` or save_checkpoint()",
        )
    ckpt.sha256 = file_sha256(path)
    return _ready(ckpt, device)


def load_default_model(*, device: str | torch.device = "cpu") -> Checkpoint:
    """Load :func:`default_model_path` (``$SARREG_MODEL`` or the packaged weights)."""
    return load_checkpoint(default_model_path(), device=device)


def load_model(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> R2D2Net:
    """Shortcut for ``load_checkpoint(path, device=device).net``."""
    return load_checkpoint(path, device=device).net


def import_naver(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    *,
    channels: int = 1,
    trusted: bool = False,
    authors_extract: bool = True,
) -> Checkpoint:
    """Convert a checkpoint published with the R2D2 paper into a sarreg checkpoint.

    The naver networks take RGB normalized with ImageNet mean/std and zero padding in the
    normalized space. The normalization is folded into the first convolution: weights are
    divided by the std (and summed over RGB for ``channels=1``), and the mean becomes the
    per-tap offset kernel of ``R2D2Net(input_offset=True)``, which is exact at the borders too.
    The converted net takes unnormalized images in [0, 1]: grey (``channels=1``, the RGB
    net applied to a grey image repeated 3 times) or RGB (``channels=3``). The Fast variant
    max-pools (``pool='max'``) like the published network.

    The checkpoint records the networks' input convention: ``preprocess`` =
    :data:`NAVER_PREPROCESS` (the 8-bit display image as ``value / 255``, what the networks
    were trained on) and ``extract`` = :data:`NAVER_EXTRACT` (the authors' pyramid: scale
    factor ``2^0.25``, levels of 256..1024 px), which :meth:`Checkpoint.extract_config` applies.

    Args:
        src: naver ``.pt`` file (plain or ``module.``-prefixed keys; CUDA tensors are fine).
        dst: where to write the sarreg checkpoint, or None to only convert in memory.
        channels: 1 or 3 input channels of the converted net.
        trusted: allow arbitrary pickled objects in ``src`` (only for files you trust); by
            default only tensors, containers and training-loss defaultdicts are accepted.
        authors_extract: record the authors' extraction settings; False = none recorded
            (sarreg's own pyramid and context descriptors).

    Returns the converted :class:`Checkpoint` (net in eval mode on CPU).
    """
    if channels not in (1, 3):
        raise ValueError("channels must be 1 or 3")
    src = Path(src)
    obj = _torch_load(src, trusted=trusted, extra_globals=_NAVER_SAFE_GLOBALS)
    if not _looks_naver(obj):
        raise CheckpointError(
            f"{src} is not a naver R2D2 checkpoint (no ops.N.weight / clf / sal keys)",
            "pass one of the published r2d2_*.pt / faster2d2_*.pt files",
        )
    ckpt = _ready(_from_naver(obj, src, channels=channels), "cpu")
    if not authors_extract:
        ckpt.extract = None
    if dst is not None:
        save_checkpoint(
            dst, ckpt.net, meta=ckpt.meta, preprocess=ckpt.preprocess, extract=ckpt.extract
        )
        ckpt.path = str(dst)
    return ckpt


# ---------------------------------------------------------------------------------------------
# sarreg format


def _from_sarreg(obj: dict, path: Path) -> Checkpoint:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, this sarreg reads up to "
            f"{FORMAT_VERSION}",
            "upgrade sarreg or re-export the model",
        )
    config = obj.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} has no model config", "re-save it with save_checkpoint()")
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise CheckpointError(
            f"{path} has unknown model settings {unknown}", "upgrade sarreg to read this model"
        )
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path} is of unknown architecture {arch!r}",
            f"use a checkpoint of one of {', '.join(ARCHITECTURES)}",
        )
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no state_dict", "re-save it with save_checkpoint()")
    _check_config_bounds(config, path)
    _check_state_shapes(config, state, path)  # before anything of the stored size is built
    net = _build(config, path)
    _load_state(net, state, path)
    return Checkpoint(
        net=net,
        config=dict(net.config),
        meta=dict(obj.get("meta") or {}),
        preprocess=obj.get("preprocess"),
        path=str(path),
        source_format="sarreg",
        training=obj.get("training"),
        extract=obj.get("extract"),
    )


#: bounds of the stored architecture settings: the shipped and published models use
#: mchan 4 (R2D2) or 1..4 (Fast-R2D2) and dim 128; wider ones are refused before anything of
#: their size is allocated (a crafted ``mchan`` would otherwise allocate gigabytes)
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {"mchan": (1, 16), "dim": (1, 512)}
_IN_CHANNELS = (1, 3)


def _check_config_bounds(config: dict, path: Path) -> None:
    """Raise CheckpointError unless the stored config is of a whitelisted architecture with
    widths in :data:`CONFIG_BOUNDS`, 1 or 3 input channels and boolean switches."""
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        value = config.get(key, 4 if key == "mchan" else 128)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CheckpointError(
                f"{path} asks for a network with {key}={value!r}, outside the {lo}..{hi} "
                "sarreg builds",
                "the file is damaged or was not written by sarreg; refused without loading it",
            )
    channels = config.get("in_channels", 1)
    if isinstance(channels, bool) or channels not in _IN_CHANNELS:
        raise CheckpointError(
            f"{path} asks for a network with in_channels={channels!r} (sarreg builds 1 or 3)",
            "the file is damaged or was not written by sarreg; refused without loading it",
        )
    for key in ("relu22", "input_offset"):
        if not isinstance(config.get(key, False), bool):
            raise CheckpointError(
                f"{path} has a non-boolean {key}={config.get(key)!r}",
                "the file is damaged or was not written by sarreg; refused without loading it",
            )


class _NoEyeOnMeta(torch.overrides.TorchFunctionMode):
    """``torch.eye`` as an uninitialized tensor: on the meta device only shapes matter, and
    the meta ``eye`` imports PyTorch's reference ops on first use (seconds)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.eye:
            n = args[0]
            m = args[1] if len(args) > 1 else kwargs.get("m", n)
            return torch.empty(n, m, dtype=kwargs.get("dtype"), device="meta")
        return func(*args, **kwargs)


def _expected_shapes(config: dict, path: Path) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``R2D2Net(**config)``, built on the ``meta`` device (no memory)."""
    try:
        with torch.device("meta"), _NoEyeOnMeta():
            net = R2D2Net(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} has an invalid model config ({err})", "re-save it with save_checkpoint()"
        ) from err
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_state_shapes(config: dict, state: dict, path: Path) -> None:
    """Raise CheckpointError unless every stored tensor has the shape the config implies."""
    expected = _expected_shapes(config, path)
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} holds a {type(value).__name__} at {key!r} in its state_dict",
                "the file is damaged or was not written by sarreg",
            )
        if key in expected and tuple(value.shape) != expected[key]:
            raise CheckpointError(
                f"{path} does not fit its own config ({key}: {tuple(value.shape)}, the config "
                f"{config.get('arch')} mchan={config.get('mchan')} dim={config.get('dim')} "
                f"implies {expected[key]})",
                "the file is damaged or was written for another architecture",
            )
    missing = [k for k in expected if k not in state and not k.startswith(_OPTIONAL_PREFIX)]
    if missing:
        raise CheckpointError(
            f"{path} does not fit a {config.get('arch')} network (missing {missing[:3]} weights)",
            "the file was written for another architecture or width",
        )


def _build(config: dict, path: Path) -> R2D2Net:
    try:
        return R2D2Net(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} has an invalid model config ({err})", "re-save it with save_checkpoint()"
        ) from err


def _load_state(net: R2D2Net, state: dict, path: Path) -> None:
    """Copy ``state`` into ``net`` with one-line errors for missing, extra or misfit weights."""
    expected = net.state_dict()
    # files written before descriptor whitening existed (and naver files) have none: identity
    state = {
        **{k: v for k, v in expected.items() if k.startswith(_OPTIONAL_PREFIX)},
        **state,
    }
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(
            f"{path} does not fit a {net.arch} network ({what} weights)",
            "the file was written for another architecture or width",
        )
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"{path} does not fit a {net.arch} network ({key}: {shape}, expected "
                f"{tuple(ref.shape)})",
                "the file was written for another architecture or width",
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(
                f"{path} has non-finite weights in {key}",
                "the training diverged; use an earlier checkpoint",
            )
    net.load_state_dict(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    )


def _ready(ckpt: Checkpoint, device: str | torch.device) -> Checkpoint:
    net = ckpt.net.to(device)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    ckpt.net = net
    return ckpt


# ---------------------------------------------------------------------------------------------
# naver R2D2 checkpoints

_OPS_KEY = re.compile(r"^ops\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _naver_state(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict of a naver checkpoint with any ``module.`` prefixes removed."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        return {}
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def _looks_naver(obj: Any) -> bool:
    state = _naver_state(obj)
    return "ops.0.weight" in state and ("clf.weight" in state or "sal.weight" in state)


def naver_op_indices(
    arch: str, mchan: int = 4, dim: int = 128, relu22: bool = False
) -> tuple[list[int], list[int]]:
    """Indices of the convolutions and batch norms in a naver ``ops`` list.

    The naver nets store one flat list of modules: per layer conv, batch norm (not after the
    last), ReLU (where the layer has one) and, for the Fast variant, a pooling module after
    the third layer. Parameter-free modules take an index too, so the index gaps encode
    where the ReLUs and the pooling are.
    """
    convs, bns = [], []
    i = 0
    for spec in layer_specs(arch, mchan=mchan, dim=dim, relu22=relu22):
        convs.append(i)
        i += 1
        if spec.bn:
            bns.append(i)
            i += 1
        if spec.relu:
            i += 1
        if spec.pool_after:
            i += 1
    return convs, bns


def _parse_naver_net(net: Any) -> tuple[str | None, dict[str, int | bool]]:
    """Class name -> our architecture, and literal keyword arguments of the constructor string."""
    if not isinstance(net, str):
        return None, {}
    m = re.match(r"\s*(\w+)\s*\((.*)\)\s*$", net)
    if not m:
        return None, {}
    kwargs: dict[str, int | bool] = {}
    for name, value in re.findall(r"(\w+)\s*=\s*(\w+)", m.group(2)):
        if value in ("True", "False"):
            kwargs[name] = value == "True"
        elif value.isdigit():
            kwargs[name] = int(value)
    return _NAVER_NETS.get(m.group(1)), kwargs


def _from_naver(obj: Any, path: Path, channels: int) -> Checkpoint:
    state = _naver_state(obj)
    net_str = obj.get("net") if isinstance(obj, dict) else None
    if "clf.weight" not in state or "sal.weight" not in state:
        raise CheckpointError(
            f"{path} is a naver network without confidence heads ({net_str or 'no net entry'})",
            "use an R2D2 checkpoint with reliability and repeatability (e.g. r2d2_WASF_N16.pt)",
        )
    convs: dict[int, dict[str, torch.Tensor]] = {}
    bns: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _OPS_KEY.match(key)
        if m is None:
            continue
        idx, name = int(m.group(1)), m.group(2)
        target = bns if name in ("running_mean", "running_var", "num_batches_tracked") else convs
        target.setdefault(idx, {})[name] = value
    if not convs or 0 not in convs or convs[0]["weight"].dim() != 4:
        raise CheckpointError(f"{path} has no first convolution", "pass an R2D2 checkpoint")
    first = convs[0]["weight"]
    if first.shape[1] != 3 or first.shape[0] % 8:
        raise CheckpointError(
            f"{path}: first convolution is {tuple(first.shape)}, expected (8*mchan, 3, k, k)",
            "pass an RGB R2D2 checkpoint",
        )
    mchan = first.shape[0] // 8
    last = convs[max(convs)]["weight"]
    dim = last.shape[0]
    conv_idx, bn_idx = sorted(convs), sorted(bns)
    hint_arch, hint_kwargs = _parse_naver_net(net_str)
    arch, relu22 = None, False
    for cand in ARCHITECTURES:
        for r22 in (False, True):
            if naver_op_indices(cand, mchan, dim, r22) == (conv_idx, bn_idx):
                arch, relu22 = cand, r22
    if arch is None:
        raise CheckpointError(
            f"{path} has a layer layout that matches no known R2D2 network ({net_str})",
            f"supported: {', '.join(_NAVER_NETS)}",
        )
    if hint_arch is not None and hint_arch != arch:
        raise CheckpointError(
            f"{path} says {net_str} but its layers are those of {arch}",
            "the file is inconsistent; re-download it",
        )
    for name, value in (("mchan", mchan), ("dim", dim), ("relu22", relu22)):
        if name in hint_kwargs and hint_kwargs[name] != value:
            raise CheckpointError(
                f"{path} says {name}={hint_kwargs[name]} in {net_str!r} but its weights have "
                f"{name}={value}",
                "the file is inconsistent; re-download it",
            )
    net = R2D2Net(
        arch,
        in_channels=channels,
        mchan=mchan,
        dim=dim,
        relu22=relu22,
        input_offset=True,
        pool=NAVER_POOL,
    )
    ours: dict[str, torch.Tensor] = {}
    for k, (ci, block) in enumerate(zip(conv_idx, net.blocks, strict=True)):
        w = convs[ci]["weight"].detach().to("cpu", torch.float64)
        b = convs[ci].get("bias")
        if b is None:
            raise CheckpointError(f"{path}: ops.{ci} has no bias", "pass an R2D2 checkpoint")
        if k == 0:
            w, offset = _fold_normalization(w, channels)
            ours["input_offset"] = offset
        ours[f"blocks.{k}.conv.weight"] = w
        ours[f"blocks.{k}.conv.bias"] = b
        if block.bn is not None:
            bn = bns[bn_idx[k]]
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                if name in bn:
                    ours[f"blocks.{k}.bn.{name}"] = bn[name]
            if "num_batches_tracked" not in bn:
                ours[f"blocks.{k}.bn.num_batches_tracked"] = torch.tensor(0)
    for ours_name, theirs in (("reliability_head", "clf"), ("repeatability_head", "sal")):
        for p in ("weight", "bias"):
            ours[f"{ours_name}.{p}"] = state[f"{theirs}.{p}"]
    ours = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in ours.items()
    }
    _load_state(net, ours, path)
    meta = {
        "name": path.stem,
        "source": f"naver R2D2 checkpoint {path.name} ({net_str or 'no net entry'})",
        "license": "CC BY-NC-SA 3.0 (naver R2D2 weights; non-commercial use only)",
        "converted": "ImageNet RGB normalization folded into the first convolution; "
        f"{channels}-channel input in [0, 1] (the 8-bit display image / 255)"
        + ("" if arch != "fast_r2d2" else "; 2x2 max pooling as published"),
        "input_normalization": {
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "folded": True,
            "grey_as_rgb": channels == 1,
        },
    }
    return Checkpoint(
        net=net,
        config=dict(net.config),
        meta=meta,
        preprocess=dict(NAVER_PREPROCESS),
        path=str(path),
        source_format="naver",
        extract=dict(NAVER_EXTRACT),
    )


def _fold_normalization(weight: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``(x - mean) / std`` into an RGB stem ``(O, 3, k, k)`` (float64 in, float64 out).

    ``conv((x - m) / s)`` with zero padding equals ``conv(x; W / s) - conv(ones; sum_c W_c m_c
    / s_c)`` with the same padding. For ``channels=1`` the grey value feeds all three inputs,
    so the weights are summed over RGB.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    scaled = weight / std
    offset = (scaled * mean).sum(dim=1, keepdim=True)
    if channels == 1:
        scaled = scaled.sum(dim=1, keepdim=True)
    return scaled, offset


# ---------------------------------------------------------------------------------------------
# helpers


def _torch_load(path: Path, *, trusted: bool, extra_globals: list) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"model checkpoint not found: {path}",
            f"pass --model PATH, set {MODEL_ENV}, or install the packaged weights",
        )
    try:
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(extra_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        if _is_unsafe_pickle(err):
            raise CheckpointError(
                f"{path} holds pickled objects that are not plain tensors or containers "
                "(code or classes); refused for safety",
                "load only checkpoints written by sarreg or the published R2D2 files; import "
                "it with import_naver(..., trusted=True) only if you trust its source",
            ) from err
        first = _torch_error_line(err)
        raise CheckpointError(
            f"cannot read model checkpoint {path} ({first[:120]})",
            "the file is not a PyTorch checkpoint or is damaged; re-download or re-train it",
        ) from err


#: how ``torch.load(weights_only=True)`` names a refused pickled class or function, over
#: PyTorch versions ("Unsupported global: GLOBAL x", "unsupported GLOBAL x whose module x is
#: blocked", "GLOBAL x was not an allowed global")
_UNSAFE_PATTERN = re.compile(r"\bGLOBAL\b|unsupported global|allowed global", re.I)


def _is_unsafe_pickle(err: BaseException) -> bool:
    """True when ``err`` is the weights-only unpickler refusing an object that is not a
    tensor/container (a class or function reference), as opposed to a damaged file."""
    import pickle

    text = str(err)
    return isinstance(err, pickle.UnpicklingError) and bool(_UNSAFE_PATTERN.search(text))


def _torch_error_line(err: BaseException) -> str:
    """The informative line of a ``torch.load`` error (its weights-only preamble and links to
    the documentation left out), or the exception's type."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if not ln.startswith(("Weights only load failed", "Please file an issue", "Check the"))
        and not ln.endswith("error:")
    ]
    return (keep or lines or [type(err).__name__])[0]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex (the model checksum in reports)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save(payload: dict, path: Path) -> None:
    """``torch.save`` through :func:`sarreg.atomic.atomic_write` (folder created if needed)."""
    from sarreg.atomic import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, overwrite=True) as tmp:
            torch.save(payload, tmp)
    except OSError as err:
        raise OutputError(
            f"cannot write checkpoint {path} ({err.strerror or err})",
            "choose a writable output folder and check free disk space",
        ) from err


def _check_plain(obj: Any, where: str, allow_tensors: bool) -> None:
    """Raise TypeError unless ``obj`` holds only types ``torch.load(weights_only=True)`` reads."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return
    if isinstance(obj, torch.Tensor):
        if allow_tensors:
            return
        raise TypeError(f"{where} holds a tensor; only training state may")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}.{k}", allow_tensors)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]", allow_tensors)
        return
    raise TypeError(f"{where} holds a {type(obj).__name__}; use plain dict/list/str/number values")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
