"""Training configuration: nested dataclasses loaded from YAML and validated.

A config file is a YAML mapping with the sections of :class:`TrainConfig` (``model``,
``data``, ``synth``, ``loss``, ``sampler``, ``optim``, ``val``, ``whiten``, ``preprocess``) and
a few top-level settings. Missing keys take the defaults below; an unknown or misspelt key is a
:class:`~sarreg.errors.ConfigError` that lists the valid keys of its section. Relative paths in
a config file are resolved against that file's folder; paths given on the command line are
resolved against the working directory. Without an ``out`` setting a run writes to
``runs/NAME`` under the working directory.

Presets (``--config NAME``) are the YAML files shipped in the package (``sarreg/configs/``,
found with :mod:`importlib.resources`, so also after a non-editable install):
:func:`preset_names`, :func:`config_path`. Their data paths point into a source checkout; where
they do not exist, :func:`check_data_paths` asks for ``--data``.

Overrides use dotted keys, e.g. ``{"optim.lr": 3e-4, "steps": 100}``
(:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sarreg.errors import ConfigError
from sarreg.preprocess import PreprocessConfig
from sarreg.training.data import SourceConfig
from sarreg.training.losses import LossConfig
from sarreg.training.sampler import SamplerConfig
from sarreg.training.synth import SynthConfig

logger = logging.getLogger(__name__)

PRESET_PACKAGE = "sarreg.configs"
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class ModelConfig:
    """Network: ``R2D2Net(arch, in_channels=1, mchan, dim, relu22)``."""

    arch: str = "fast_r2d2"
    mchan: int = 2
    dim: int = 128
    relu22: bool = False

    def __post_init__(self) -> None:
        from sarreg.model.r2d2 import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise ConfigError(
                f"unknown model.arch {self.arch!r}", f"use one of {', '.join(ARCHITECTURES)}"
            )
        if self.mchan < 1 or self.dim < 8:
            raise ConfigError("model.mchan must be >= 1 and model.dim >= 8", "use mchan: 2")


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        sources: data sources (see :class:`sarreg.training.data.SourceConfig`); a plain path
            string is accepted for a source with default settings.
        crop: side of the training images (pixels).
        workers: DataLoader worker processes synthesizing pairs (0 = in the training process).
    """

    sources: tuple[SourceConfig, ...] = ()
    crop: int = 192
    workers: int = 0


def _val_synth() -> SynthConfig:
    return SynthConfig(
        rotation_deg=15.0,
        scale=(0.8, 1.25),
        aspect=1.0,
        shear=0.0,
        translation=0.1,
        perspective=0.0,
        looks=(1.0, 4.0),
        noise_prob=0.0,
        ramp_db=0.0,
        gain_db=(0.0, 0.0),
        gamma=(1.0, 1.0),
        display_prob=0.0,
    )


@dataclass(frozen=True)
class ValConfig:
    """Validation on fixed held-out synthetic pairs.

    Attributes:
        sources: held-out data (files or folders); files found here are never used for
            training, also when a training source contains them.
        pairs: number of validation pairs (fixed by ``seed``).
        crop: side of the validation images.
        every: validate every this many steps (0 = only at the end).
        seed: seed of the validation pairs.
        max_keypoints: top keypoints per image (ranked by reliability, as in inference).
        thresholds: pixel error thresholds of the mean matching accuracy (MMA).
        synth: synthesis ranges of the validation pairs (the target conditions).
    """

    sources: tuple[SourceConfig, ...] = ()
    pairs: int = 16
    crop: int = 512
    every: int = 250
    seed: int = 1234
    max_keypoints: int = 2000
    thresholds: tuple[float, ...] = (1.0, 3.0, 5.0)
    synth: SynthConfig = field(default_factory=_val_synth)


@dataclass(frozen=True)
class WhitenConfig:
    """Descriptor whitening fitted at each validation (:mod:`sarreg.model.whitening`).

    Attributes:
        pairs: synthetic pairs drawn from the training data (not the validation data) like
            training pairs (``data.crop`` pixels, ``synth`` ranges), fixed by ``seed``;
            0 = no whitening.
        max_keypoints: top keypoints per image (0 = ``val.max_keypoints``).
        max_error: a keypoint of image 1 and one of image 2 are a matching pair when the
            ground truth maps the first within this many pixels of the second.
        shrink: weight of the identity mixed into the pair-difference covariance.
        spread_power: emphasis of the directions along which points spread widely
            (:func:`sarreg.model.whitening.fit_whitening`); 0 = plain whitening.
        seed: seed of the pairs.
    """

    pairs: int = 0
    max_keypoints: int = 0
    max_error: float = 1.5
    shrink: float = 0.1
    spread_power: float = 0.3
    seed: int = 99

    def __post_init__(self) -> None:
        if self.pairs < 0 or self.max_keypoints < 0 or self.max_error <= 0:
            raise ConfigError(
                "whiten.pairs and max_keypoints must be >= 0 and max_error > 0",
                "use e.g. pairs: 256, max_error: 1.5",
            )
        if not 0.0 <= self.shrink < 1.0:
            raise ConfigError("whiten.shrink must be in [0, 1)", "use e.g. shrink: 0.1")
        if not 0.0 <= self.spread_power <= 1.0:
            raise ConfigError("whiten.spread_power must be in [0, 1]", "use e.g. 0.3")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule.

    Attributes:
        lr, weight_decay: AdamW settings.
        schedule: 'cosine' (to ``min_lr_ratio * lr`` at the last step), 'step' (times
            ``gamma`` every ``step_size`` steps) or 'constant'; all after ``warmup_steps``
            of linear warm-up.
        grad_clip: clip the gradient norm to this value (0 = off).
    """

    lr: float = 1e-4
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    step_size: int = 2000
    gamma: float = 0.5
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown optim.schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}"
            )
        finite = math.isfinite(self.lr) and math.isfinite(self.weight_decay)
        if not finite or self.lr <= 0 or self.weight_decay < 0 or self.step_size < 1:
            raise ConfigError(
                "optim.lr must be > 0, weight_decay >= 0 and step_size >= 1",
                "use e.g. lr: 1.0e-4, weight_decay: 5.0e-4",
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (see the preset ``sarreg/configs/fast_r2d2_sar.yaml``).

    Attributes:
        name: model name stored in the checkpoints.
        batch_size: pairs per step.
        steps: total optimizer steps (the learning-rate schedule runs to this step).
        stop_at: stop the run after this step, with the schedule still that of ``steps``
            (0 = at ``steps``); how a run stopped by hand is reproduced.
        seed: global seed (weights, data, sampler).
        device: 'auto' (CUDA when available), 'cpu' or 'cuda'.
        threads: torch CPU threads (0 = torch's default).
        checkpoint_every: write ``last.pt`` every this many steps.
        log_every: CSV/log line every this many steps.
        out: output folder (checkpoints, logs); empty = ``runs/NAME`` under the working
            directory.
    """

    name: str = "fast_r2d2_sar"
    batch_size: int = 4
    steps: int = 5000
    stop_at: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    checkpoint_every: int = 250
    log_every: int = 25
    out: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    whiten: WhitenConfig = field(default_factory=WhitenConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}", f"use one of {', '.join(DEVICES)}")
        positive = {"batch_size": self.batch_size, "steps": self.steps}
        positive.update(checkpoint_every=self.checkpoint_every, log_every=self.log_every)
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}", f"set {key} to e.g. 100")
        if not 0 <= self.stop_at <= self.steps:
            raise ConfigError(
                f"stop_at must be between 0 and steps ({self.steps}), got {self.stop_at}",
                "set stop_at: 0 to train all steps",
            )
        if self.loss.whitened and self.whiten.pairs < 1:
            raise ConfigError(
                "loss.whitened needs a descriptor whitening fitted during training",
                "set whiten.pairs (e.g. 256) or loss.whitened: false",
            )
        need = 2 * self.sampler.border + self.sampler.query_step
        if self.data.crop < max(need, self.loss.n * 2):
            raise ConfigError(
                f"data.crop {self.data.crop} is too small for sampler.border "
                f"{self.sampler.border} and loss.n {self.loss.n}",
                f"use a crop of at least {max(need, self.loss.n * 2)}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), as written to YAML and checkpoints."""
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# dict -> dataclass with validation
# --------------------------------------------------------------------------------------------


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``typ`` or raise ConfigError."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if dataclasses.is_dataclass(typ):
        if typ is SourceConfig and isinstance(value, str):
            value = {"path": value}
        return _build(typ, value, where)
    if origin in (tuple, list) or typ in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            if args and dataclasses.is_dataclass(args[0]):
                value = [value]
            elif origin is tuple and args and args[-1] is Ellipsis:
                value = [value]
            else:
                raise ConfigError(f"{where} must be a list, got {value!r}", f"write {where}: [...]")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) == len(value):
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in pairs)
        if args:
            raise ConfigError(
                f"{where} needs {len(args)} values, got {len(value)}", f"write {where}: [lo, hi]"
            )
        return tuple(value)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(
            f"{where} = {value!r} is not a valid {name}", f"give {where} a {name} value"
        ) from None
    return value


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls: type, values: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where or 'config'} must be a mapping of settings, got {values!r}",
            "write it as key: value lines",
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        section = f" in section '{where}'" if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}{section}",
            f"valid keys are: {', '.join(names)}",
        )
    defaults = {f.name: _field_default(f) for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if cls is PreprocessConfig:
            kwargs[key] = value
            continue
        default = defaults[key]
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            value = {**_plain(dataclasses.asdict(default)), **value}  # keys on top of defaults
        kwargs[key] = _coerce(value, hints[key], path)
    if cls is PreprocessConfig:
        return PreprocessConfig.from_dict(kwargs)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(
            f"invalid {where or 'config'} settings ({err})", "check the keys"
        ) from err


def config_from_dict(values: Mapping[str, Any] | None, base: Path | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig`.

    Relative data and validation paths are resolved against ``base`` (the working directory
    when None), a relative ``out`` too; an empty ``out`` becomes ``runs/NAME`` under the working
    directory.
    """
    cfg = _build(TrainConfig, dict(values or {}), "")
    return resolve_paths(cfg, Path.cwd() if base is None else base)


def resolve_paths(cfg: TrainConfig, base: Path) -> TrainConfig:
    """Make the data, validation and output paths absolute (relative ones against ``base``).

    An empty ``out`` is ``<working directory>/runs/<name>``.
    """

    def fix(p: str, root: Path) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (root / path).resolve())

    def fix_sources(sources: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        return tuple(dataclasses.replace(s, path=fix(s.path, base)) for s in sources)

    data = dataclasses.replace(cfg.data, sources=fix_sources(cfg.data.sources))
    val = dataclasses.replace(cfg.val, sources=fix_sources(cfg.val.sources))
    out = fix(cfg.out, base) if cfg.out else fix(str(Path("runs") / cfg.name), Path.cwd())
    return dataclasses.replace(cfg, data=data, val=val, out=out)


def _preset_dir() -> Path:
    """Folder of the packaged presets (``sarreg/configs``), via importlib.resources."""
    from importlib import resources

    return Path(str(resources.files(PRESET_PACKAGE)))


def preset_names() -> list[str]:
    """Names of the packaged presets (``sarreg train --list-configs``), sorted."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


def describe_presets() -> list[tuple[str, str]]:
    """``(name, first comment line)`` of each packaged preset."""
    rows = []
    for name in preset_names():
        first = ""
        for line in (_preset_dir() / f"{name}.yaml").read_text().splitlines():
            if line.startswith("#") and line.strip("# "):
                first = line.strip("# ").rstrip(":")
                break
        rows.append((name, first))
    return rows


def config_path(name_or_path: str | Path) -> Path:
    """A preset NAME resolves to the packaged ``sarreg/configs/NAME.yaml``; else a file path.

    Returned resolved (symbolic links followed), so that relative paths inside the file are
    taken against the folder of the file itself.
    """
    p = Path(name_or_path).expanduser()
    if p.suffix.lower() in (".yaml", ".yml") or p.exists() or len(p.parts) > 1:
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}", "pass an existing YAML file")
        return p.resolve()
    candidate = _preset_dir() / f"{p.name}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"no config named {str(name_or_path)!r}",
            f"use one of {', '.join(preset_names()) or '(none)'} or a path to a YAML file",
        )
    return candidate.resolve()


def load_config(
    name_or_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Read a YAML config (or the defaults when None) and apply dotted-key ``overrides``.

    Relative paths of the file are resolved against its folder; those of ``overrides`` and of
    the defaults against the working directory (pass absolute paths in overrides).
    """
    values: dict[str, Any] = {}
    base = Path.cwd()
    if name_or_path is not None:
        path = config_path(name_or_path)
        base = path.parent
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0] if str(err) else "syntax error"
            raise ConfigError(f"cannot parse {path} ({first})", "fix the YAML syntax") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} is not a YAML mapping", "write key: value lines")
        values = loaded or {}
    out = (overrides or {}).get("out")
    values = merge_overrides(values, overrides or {})
    cfg = config_from_dict(values, base)
    if isinstance(out, str) and out and not Path(out).is_absolute():
        cfg = dataclasses.replace(cfg, out=str((Path.cwd() / out).resolve()))
    return cfg


def check_data_paths(cfg: TrainConfig, data_given: bool, val_given: bool) -> TrainConfig:
    """Refuse a config whose training data is missing; drop a missing validation set.

    A preset's data paths point into a source checkout of sarreg; after a package install
    they do not exist and the user passes ``--data``. When ``--data`` was given (``data_given``)
    but the config's validation files are missing, the run trains without validation (logged);
    when the validation files came from the command line (``val_given``) they must exist.

    Raises:
        ConfigError: a training source does not exist (asks for ``--data``), or given
            validation data does not exist.
    """
    missing = [s.path for s in cfg.data.sources if not Path(s.path).exists()]
    if missing and not data_given:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(
            f"training data of config {cfg.name!r} not found: {missing[0]}{more}",
            "pass your training images with --data DIR (the presets' data ship with the "
            "source repository, not the package)",
        )
    val_missing = [s.path for s in cfg.val.sources if not Path(s.path).exists()]
    if val_missing and not val_given and (data_given or not cfg.data.sources):
        logger.warning(
            "validation data of config %r not found (%s): training without validation; "
            "pass --val-data DIR for it",
            cfg.name,
            val_missing[0],
        )
        return dataclasses.replace(cfg, val=dataclasses.replace(cfg.val, sources=()))
    return cfg


def merge_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested copy of ``values`` with dotted-key ``overrides`` set (``'optim.lr': 1e-3``)."""
    out = _plain(dict(values))
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = {}
                node[k] = child
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted}: {k} is not a section", "check the key")
            node = child
        node[keys[-1]] = value
    return out


def apply_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """``cfg`` with dotted-key overrides applied and validated (paths as given, unresolved)."""
    merged = merge_overrides(cfg.to_dict(), overrides)
    return config_from_dict(merged, Path.cwd())


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=3e-4'`` -> ``('optim.lr', 0.0003)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE", "write e.g. --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write ``cfg`` as YAML (the exact settings of a run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
