"""The one image normalization shared by training and inference.

``preprocess(data, mask, kind, config)`` turns a band read by :mod:`sarreg.io` into the network
input: ``float32 (H, W)`` in ``[0, 1]``, computed as

1. log compression of linear values to dB (``kind`` 'power': ``10 log10``, 'amplitude':
   ``20 log10``; 'db' and 'display' are used as they are),
2. robust scaling ``(x - p_low) / (p_high - p_low)`` with percentiles of the valid pixels
   (deterministic grid subsample of at most ``max_samples`` pixels), clipped to ``[0, 1]``,
3. invalid pixels filled with the mean of the valid scaled values, so nodata borders make no
   strong edges; small holes (scattered NaN/inf or nodata pixels, connected groups of at most
   ``(2 mask_margin + 1)^2`` pixels) with the mean of their valid neighbours instead,

With ``PreprocessConfig.scaling = '8bit'`` (networks trained on 8-bit photographs, such as the
checkpoints published with the R2D2 paper) the result is instead the 8-bit display image the
network expects, as ``value / 255``: an 8-bit display product ('display' data with integer
values in 0..255) as it is, any other data through steps 1-2 and then rounded to 256 levels.

plus a keypoint mask: the valid mask eroded so that every keypoint is at least ``mask_margin``
pixels (Chebyshev distance) from any nodata region. Small holes are not eroded around (a few
scattered invalid pixels must not empty the mask), only left out themselves. The image border
itself is not treated as nodata. Arrays are ``(H, W)`` with pixel centres ``(x, y)`` =
(column, row).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from sarreg.errors import ConfigError, EmptyImageError

if TYPE_CHECKING:
    from sarreg.io import Raster

logger = logging.getLogger(__name__)

LOG_KINDS: tuple[str, ...] = ("power", "amplitude")
"""Kinds that are log-compressed (linear backscatter)."""
ALL_KINDS: tuple[str, ...] = ("power", "amplitude", "db", "display")

_FLOOR_QUANTILE = 0.1  # percent: non-positive/tiny linear values are raised to this quantile

SCALINGS: tuple[str, ...] = ("percentile", "8bit")
"""``PreprocessConfig.scaling`` values: sarreg's robust percentile stretch, or the 8-bit display
image (``value / 255``) of networks trained on 8-bit images."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Normalization parameters (stored in model checkpoints; keep training == inference).

    Attributes:
        log: compress 'power'/'amplitude' data to dB before scaling.
        low_percentile: percentile of valid pixels mapped to 0.
        high_percentile: percentile of valid pixels mapped to 1.
        mask_margin: keypoints must be at least this many pixels from nodata.
        max_samples: at most this many valid pixels (a regular grid subsample) feed the
            percentiles and the dB floor.
        scaling: 'percentile' (sarreg's models: the robust stretch to ``[0, 1]``) or '8bit'
            (the 8-bit display image ``value / 255`` that networks trained on 8-bit images
            take: 8-bit display products as they are, other data stretched as for
            'percentile' and rounded to 256 levels).
    """

    log: bool = True
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    mask_margin: int = 4
    max_samples: int = 1_000_000
    scaling: str = "percentile"

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ConfigError(
                f"percentiles must satisfy 0 <= low < high <= 100, got low="
                f"{self.low_percentile} high={self.high_percentile}",
                "use e.g. low_percentile=1 high_percentile=99",
            )
        if int(self.mask_margin) != self.mask_margin or self.mask_margin < 0:
            raise ConfigError(
                f"mask_margin must be a non-negative integer, got {self.mask_margin!r}",
                "use e.g. mask_margin=4",
            )
        if int(self.max_samples) != self.max_samples or self.max_samples < 1000:
            raise ConfigError(
                f"max_samples must be an integer >= 1000, got {self.max_samples!r}",
                "use e.g. max_samples=1000000",
            )
        if self.scaling not in SCALINGS:
            raise ConfigError(
                f"unknown preprocess scaling {self.scaling!r}",
                f"use one of {', '.join(SCALINGS)}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON/YAML/checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PreprocessConfig:
        """Build from a dict such as :meth:`to_dict` wrote; missing keys take defaults.

        Raises ConfigError for unknown keys (listing the valid ones) or bad values.
        """
        values = dict(values or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown preprocess setting(s): {', '.join(map(str, unknown))}",
                f"valid keys are {', '.join(valid)}",
            )
        types = {"log": bool, "low_percentile": float, "high_percentile": float}
        types.update({"mask_margin": int, "max_samples": int, "scaling": str})
        kwargs = {}
        for key, value in values.items():
            try:
                kwargs[key] = _coerce(value, types[key])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"preprocess setting {key}={value!r} is not a valid {types[key].__name__}",
                    f"give a {types[key].__name__} value",
                ) from None
        return cls(**kwargs)


def _coerce(value: Any, typ: type) -> Any:
    """Convert a dict value to ``typ`` strictly (no silent float -> int truncation)."""
    if typ is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(value)
    if typ is int:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError(value)
        return int(float(value))
    if isinstance(value, bool) or (typ is str and not isinstance(value, str)):
        raise ValueError(value)
    return typ(value)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in ALL_KINDS:
        raise ConfigError(f"unknown image kind {kind!r}", f"use one of {', '.join(ALL_KINDS)}")


def sample_valid(values: np.ndarray, mask: np.ndarray, max_samples: int = 1_000_000) -> np.ndarray:
    """Valid values on a regular grid subsample (deterministic), at most about ``max_samples``.

    ``values``/``mask`` are ``(H, W)``; returns a 1-D float array of values where ``mask``.
    """
    h, w = values.shape
    step = max(1, int(math.ceil(math.sqrt(h * w / max_samples))))
    sub_v = values[::step, ::step]
    sub_m = mask[::step, ::step]
    sample = sub_v[sub_m]
    if sample.size == 0 and step > 1:  # sparse valid pixels missed by the grid
        sample = values[mask]
        if sample.size > max_samples:
            sample = sample[:: int(math.ceil(sample.size / max_samples))]
    return sample


def to_db(
    data: np.ndarray,
    kind: str,
    mask: np.ndarray | None = None,
    floor: float | None = None,
) -> np.ndarray:
    """Linear backscatter -> dB: 'power' ``10 log10``, 'amplitude' ``20 log10``.

    Values below ``floor`` (default: the 0.1 % quantile of the valid positive values, so zeros
    and negatives become as dark as the darkest real signal instead of -inf) are raised to it.
    'db' and 'display' data are returned unchanged (as float32).

    Args:
        data: ``(H, W)`` linear values.
        kind: 'power' | 'amplitude' | 'db' | 'display'.
        mask: ``(H, W)`` bool valid pixels used to pick the floor (default: finite pixels).
        floor: explicit linear floor (> 0).
    Returns:
        ``(H, W)`` float32.
    """
    _check_kind(kind)
    x = np.asarray(data, dtype=np.float32)
    if kind not in LOG_KINDS:
        return x
    if floor is None:
        valid = np.isfinite(x) if mask is None else (np.asarray(mask, bool) & np.isfinite(x))
        sample = sample_valid(x, valid & (x > 0))
        if sample.size:
            floor = float(np.percentile(sample, _FLOOR_QUANTILE))
        else:
            floor = 1e-10
    floor = max(float(floor), 1e-30)
    factor = np.float32(10.0 if kind == "power" else 20.0)
    with np.errstate(invalid="ignore"):
        clipped = np.maximum(np.nan_to_num(x, nan=floor, posinf=floor, neginf=floor), floor)
    return (factor * np.log10(clipped)).astype(np.float32, copy=False)


def robust_range(
    values: np.ndarray,
    mask: np.ndarray,
    config: PreprocessConfig = PreprocessConfig(),
    name: str | None = None,
) -> tuple[float, float]:
    """``(p_low, p_high)`` percentiles of the valid pixels (deterministic subsample).

    ``name`` (e.g. ``'the moving image a.tif'``) is used in the messages.
    Raises EmptyImageError when there is no valid pixel or no contrast (``p_high <= p_low``).
    """
    what = name or "image"
    sample = sample_valid(values, mask, config.max_samples)
    if sample.size == 0:
        raise EmptyImageError(
            f"{what} has no valid pixels (all nodata)",
            "check --band/nodata or choose another file",
        )
    lo, hi = (
        float(v) for v in np.percentile(sample, [config.low_percentile, config.high_percentile])
    )
    if not hi > lo + 1e-6 * max(1.0, abs(lo), abs(hi)):
        raise EmptyImageError(
            f"{what} has no contrast (constant values: the {config.low_percentile:g}-"
            f"{config.high_percentile:g} % percentiles of its {sample.size} sampled valid "
            f"pixels ({100.0 * np.asarray(mask).mean():.1f} % of the image) are both {lo:.6g})",
            "check --band/nodata (a constant or almost empty band cannot be registered) or "
            "choose another image",
        )
    return lo, hi


def is_8bit_display(values: np.ndarray, valid: np.ndarray, kind: str) -> bool:
    """Whether ``values`` ``(H, W)`` are an 8-bit display image: kind 'display' and every
    valid value an integer in 0..255 (e.g. a uint8 product)."""
    if kind != "display":
        return False
    v = values[valid]
    return bool(v.size) and bool(np.all((v >= 0) & (v <= 255) & (v == np.round(v))))


def small_holes(valid: np.ndarray, margin: int) -> np.ndarray:
    """Invalid pixels in 8-connected groups of at most ``(2 margin + 1)^2`` pixels (scattered
    NaN/inf or nodata pixels inside the data, not nodata borders). ``(H, W)`` bool -> bool."""
    invalid = ~np.asarray(valid, dtype=bool)
    if not invalid.any():
        return invalid
    max_area = (2 * max(int(margin), 1) + 1) ** 2
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        invalid.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    small = stats[:, cv2.CC_STAT_AREA] <= max_area
    small[0] = False  # label 0 = the valid pixels
    return small[labels]


def _fill_holes(image: np.ndarray, valid: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``image`` with ``holes`` set to the mean of the valid pixels in a 7 x 7 window (where
    there is one)."""
    w = valid.astype(np.float32)
    num = cv2.boxFilter(np.where(valid, image, 0).astype(np.float32), -1, (7, 7), normalize=False)
    den = cv2.boxFilter(w, -1, (7, 7), normalize=False)
    local = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    use = holes & (den > 0)
    return np.where(use, local, image).astype(np.float32, copy=False)


def describe_image(data: np.ndarray, mask: np.ndarray, kp_mask: np.ndarray | None = None) -> str:
    """What an image holds, for error messages: valid fraction, non-finite pixels, the share
    of the keypoint mask and the value range (1st..99th percentile of the valid pixels)."""
    m = np.asarray(mask, dtype=bool)
    x = np.asarray(data)
    parts = [f"{100.0 * m.mean():.1f} % valid pixels"]
    n_bad = int((~np.isfinite(x)).sum())
    if n_bad:
        parts.append(f"{n_bad} NaN/inf")
    if kp_mask is not None:
        parts.append(f"{100.0 * np.asarray(kp_mask, bool).mean():.1f} % usable for keypoints")
    sample = sample_valid(x, m & np.isfinite(x), 100_000)
    if sample.size:
        lo, hi = np.percentile(sample, [1, 99])
        parts.append(f"values {lo:.4g}..{hi:.4g}")
    return ", ".join(parts)


def keypoint_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    """Valid mask eroded by ``margin`` pixels (square window, Chebyshev distance).

    A pixel stays True only if every pixel within ``margin`` rows/columns is valid; pixels
    outside the image do not count as invalid. ``(H, W)`` bool -> ``(H, W)`` bool.
    """
    m = np.asarray(mask, dtype=bool)
    if margin <= 0:
        return m.copy()
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    eroded = cv2.erode(
        m.astype(np.uint8),
        kernel,
        borderType=cv2.BORDER_CONSTANT,
        borderValue=1,
    )
    return eroded.astype(bool)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def preprocess(
    data: np.ndarray,
    mask: np.ndarray,
    kind: str,
    config: PreprocessConfig = PreprocessConfig(),
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalize one band for the network.

    Args:
        data: ``(H, W)`` values in ``kind`` units (invalid pixels may hold anything, NaN too).
        mask: ``(H, W)`` bool, True = valid.
        kind: 'power' | 'amplitude' | 'db' | 'display'.
        config: normalization parameters.
        name: what the image is, for messages (e.g. ``'the moving image a.tif'``).

    Returns:
        ``image`` float32 ``(H, W)`` in ``[0, 1]`` with invalid pixels set to the mean of the
        valid ones, and ``keypoint_mask`` bool ``(H, W)`` (valid mask eroded by
        ``config.mask_margin``). With ``config.scaling == '8bit'`` the valid pixels hold
        multiples of 1/255 (see the module docstring).

    Raises:
        EmptyImageError: no valid pixel, or no contrast. ConfigError: bad kind or shapes.
    """
    _check_kind(kind)
    x = np.asarray(data)
    m = np.asarray(mask, dtype=bool)
    if x.ndim != 2 or x.shape != m.shape:
        raise ConfigError(
            f"preprocess needs 2-D data and mask of the same shape, got {x.shape} and {m.shape}",
            "pass one band (H, W) and its valid mask",
        )
    valid = m & np.isfinite(x)
    if not valid.any():
        raise EmptyImageError(
            f"{name or 'image'} has no valid pixels (all nodata or NaN/inf)",
            "check --band/nodata or choose another file",
        )
    if config.log and kind in LOG_KINDS:
        x = to_db(x, kind, valid)
    else:
        x = x.astype(np.float32, copy=False)
    lo, hi = robust_range(x, valid, config, name=name)
    if config.scaling == "8bit" and is_8bit_display(x, valid, kind):
        lo, hi = 0.0, 255.0  # the display image as it is: value / 255
        image = (x / np.float32(255.0)).astype(np.float32, copy=False)
    else:
        scale = np.float32(1.0 / (hi - lo))
        with np.errstate(invalid="ignore", over="ignore"):
            image = np.clip((x - np.float32(lo)) * scale, 0.0, 1.0).astype(np.float32, copy=False)
        if config.scaling == "8bit":  # as written to an 8-bit display image, then read back
            image = (np.round(image * np.float32(255.0)) / np.float32(255.0)).astype(np.float32)
    fill = np.float32(image[valid].mean(dtype=np.float64))
    image = np.where(valid, image, fill).astype(np.float32, copy=False)
    holes = small_holes(valid, int(config.mask_margin))
    if holes.any():
        image = _fill_holes(image, valid, holes)
    kp_mask = keypoint_mask(valid | holes, int(config.mask_margin)) & valid
    logger.debug(
        "preprocess %s %s: range [%.4g, %.4g]%s, fill %.3f, %.1f %% valid, %.1f %% keypoint mask",
        kind,
        x.shape,
        lo,
        hi,
        " dB" if (config.log and kind in LOG_KINDS) or kind == "db" else "",
        float(fill),
        100.0 * valid.mean(),
        100.0 * kp_mask.mean(),
    )
    return image, kp_mask


def preprocess_raster(
    raster: Raster, config: PreprocessConfig = PreprocessConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`preprocess` applied to a :class:`sarreg.io.Raster` (its data, mask and kind)."""
    return preprocess(raster.data, raster.mask, raster.kind, config)
