"""Synthetic SAR training pairs with exact dense ground truth (pure numpy / OpenCV).

A pair is made from a *scene* held in linear intensity (power). Image 1 is a ``crop x crop``
window of the scene at ``origin``; image 2 is the scene (or a second, same-grid date of it)
warped by a random plane projective transform ``H`` that maps image-1 pixel centres to image-2
pixel centres, ``[x2, y2, 1]^T ~ H @ [x1, y1, 1]^T`` (pixel centres, top-left centre at
``(0, 0)``). The dense ground truth ``field[y, x] = (x2, y2)`` is ``H`` applied to every image-1
pixel centre; ``valid[y, x]`` says the point lands inside image 2 on valid data in both images.

Radiometry, in this order, independently for the two sides:

1. The scene's own speckle has been reduced beforehand (:func:`smooth_intensity`: box
   multi-look, Lee or median filter in linear intensity, ``SynthConfig.smoothing``), so that
   the two sides do not share one speckle pattern.
2. Image 2 is warped (bilinear) and, like image 1, gets fresh multiplicative speckle
   ``Gamma(shape=L, scale=1/L)`` (mean 1, variance ``1/L``) on its own pixel grid, ``L`` drawn
   log-uniformly from ``SynthConfig.looks``.
3. Additive thermal-noise floor (exponential, mean ``noise_floor_db`` relative to the median
   intensity), a smooth gain ramp (``ramp_db`` across the crop), global gain (``gain_db``) and
   contrast (``I ** gamma``).
4. Representation: with probability ``display_prob`` the side is turned into an 8-bit display
   product (intensity or amplitude divided by its 99 % quantile, clipped, rounded to 0..255),
   else it stays linear power. Either way it is then normalized by :func:`sarreg.preprocess
   .preprocess` with the matching ``kind``, exactly as at inference.

Multi-date pairs (two dates on the same grid) use date A for image 1 and date B, warped by the
same kind of random ``H``, for image 2: the real temporal change stays in; their real speckle is
kept (no smoothing and, by default, no extra speckle).

Default ranges (:class:`SynthConfig`): rotation +-25 deg, isotropic scale 0.75..1.33 (log-uniform),
anisotropy 1/1.1..1.1, shear +-0.05, translation +-10 % of the crop, perspective +-0.05 (relative
change of the homogeneous scale across half the crop), looks 1..8, noise floor -30..-12 dB,
ramp +-1.5 dB, gain +-3 dB, gamma 0.8..1.25, display_prob 0.2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from sarreg.errors import ConfigError
from sarreg.preprocess import PreprocessConfig, preprocess

SMOOTHING = ("box", "lee", "median", "none")
DISPLAY_MODES = ("intensity", "amplitude")


@dataclass(frozen=True)
class SynthConfig:
    """Ranges of the random pair synthesis (see the module docstring for the order).

    Attributes:
        rotation_deg: rotation uniform in ``[-r, r]`` degrees.
        scale: isotropic scale range ``(lo, hi)``, drawn log-uniformly (image 2 / image 1 size).
        aspect: anisotropy: x/y scale ratio log-uniform in ``[1/a, a]``.
        shear: shear coefficient uniform in ``[-s, s]``.
        translation: translation uniform in ``[-t, t]`` times the crop size.
        perspective: perspective terms uniform in ``[-p, p]`` per half crop size.
        smoothing: 'box' | 'lee' | 'median' | 'none': reduction of the scene's own speckle.
        smoothing_size: filter window (odd; median supports 3 and 5).
        source_looks: equivalent number of looks of the source, used by the Lee filter.
        looks: range of the looks ``L`` of the added speckle (log-uniform); ``L <= 0`` or
            ``speckle=False`` disables it.
        speckle: add independent speckle to each side of single-image pairs.
        multidate_speckle: also add speckle to multi-date pairs (they carry real speckle).
        noise_floor_db: additive noise mean relative to the median intensity, dB range.
        noise_prob: probability of adding the noise floor to a side.
        ramp_db: peak-to-peak amplitude bound of a linear gain ramp across the crop, dB.
        gain_db: global gain range, dB (cancels in preprocess except in display mode).
        gamma: contrast exponent range on intensity (cancels in dB except in display mode).
        display_prob: probability that a side is represented as an 8-bit display product.
        display_modes: what the 8-bit product encodes: 'intensity' and/or 'amplitude'.
    """

    rotation_deg: float = 25.0
    scale: tuple[float, float] = (0.75, 1.33)
    aspect: float = 1.1
    shear: float = 0.05
    translation: float = 0.1
    perspective: float = 0.05
    smoothing: str = "box"
    smoothing_size: int = 3
    source_looks: float = 4.4
    looks: tuple[float, float] = (1.0, 8.0)
    speckle: bool = True
    multidate_speckle: bool = False
    noise_floor_db: tuple[float, float] = (-30.0, -12.0)
    noise_prob: float = 0.5
    ramp_db: float = 1.5
    gain_db: tuple[float, float] = (-3.0, 3.0)
    gamma: tuple[float, float] = (0.8, 1.25)
    display_prob: float = 0.2
    display_modes: tuple[str, ...] = ("intensity", "amplitude")

    def __post_init__(self) -> None:
        for name in ("scale", "looks", "noise_floor_db", "gain_db", "gamma"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(
                    f"synth.{name} must be a range [low, high] with low <= high, got {value}",
                    f"write e.g. {name}: [{value[0] if value else 1}, {value[-1] if value else 2}]",
                )
            object.__setattr__(self, name, value)
        object.__setattr__(self, "display_modes", tuple(self.display_modes))
        if self.scale[0] <= 0 or self.gamma[0] <= 0 or self.aspect < 1.0:
            raise ConfigError(
                "synth.scale and synth.gamma must be positive and synth.aspect >= 1",
                "use e.g. scale: [0.75, 1.33], gamma: [0.8, 1.25], aspect: 1.1",
            )
        if self.smoothing not in SMOOTHING:
            raise ConfigError(
                f"unknown synth.smoothing {self.smoothing!r}", f"use one of {', '.join(SMOOTHING)}"
            )
        if self.smoothing_size < 1 or self.smoothing_size % 2 == 0:
            raise ConfigError(
                f"synth.smoothing_size must be an odd positive integer, got {self.smoothing_size}",
                "use e.g. 3 or 5",
            )
        if self.smoothing == "median" and self.smoothing_size not in (1, 3, 5):
            raise ConfigError(
                f"median smoothing supports sizes 3 and 5, got {self.smoothing_size}",
                "use smoothing_size 3 or 5, or smoothing 'box'/'lee'",
            )
        bad = [m for m in self.display_modes if m not in DISPLAY_MODES]
        if bad or (self.display_prob > 0 and not self.display_modes):
            raise ConfigError(
                f"synth.display_modes must be a non-empty subset of {DISPLAY_MODES}, got "
                f"{list(self.display_modes)}",
                "use e.g. display_modes: [intensity, amplitude]",
            )
        for name in ("display_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"synth.{name} must be in [0, 1]", f"set {name}: 0.2")

    def to_dict(self) -> dict:
        """Plain dict (lists for ranges), YAML/JSON friendly."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the settings (the valid YAML keys of the ``synth`` section)."""
        return [f.name for f in fields(cls)]


@dataclass
class SynthPair:
    """One training pair with dense ground truth.

    Attributes:
        image1, image2: ``(c, c)`` float32 in ``[0, 1]`` (output of ``preprocess``).
        mask1, mask2: ``(c, c)`` bool, valid image content (not nodata, inside the scene).
        homography: ``(3, 3)`` float64, image-1 pixel centres -> image-2 pixel centres.
        field: ``(c, c, 2)`` float32, ``field[y, x] = (x2, y2)`` position in image 2.
        valid: ``(c, c)`` bool, the ground truth of that pixel is usable.
    """

    image1: np.ndarray
    image2: np.ndarray
    mask1: np.ndarray
    mask2: np.ndarray
    homography: np.ndarray
    field: np.ndarray
    valid: np.ndarray


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    if hi <= lo:
        return float(lo)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_homography(
    rng: np.random.Generator,
    shape1: tuple[int, int],
    shape2: tuple[int, int] | None = None,
    config: SynthConfig = SynthConfig(),
) -> np.ndarray:
    """Random transform ``(3, 3)`` mapping image-1 pixel centres to image-2 pixel centres.

    The image-1 centre maps to the image-2 centre plus a random translation; about that point
    the transform is ``perspective @ rotation @ scale @ anisotropy @ shear``.

    Args:
        rng: random generator.
        shape1, shape2: ``(H, W)`` of image 1 and image 2 (default: same as image 1).
        config: ranges.
    """
    shape2 = shape1 if shape2 is None else shape2
    h1, w1 = shape1
    h2, w2 = shape2
    c1 = np.array([(w1 - 1) / 2.0, (h1 - 1) / 2.0])
    c2 = np.array([(w2 - 1) / 2.0, (h2 - 1) / 2.0])
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = _log_uniform(rng, *config.scale)
    aspect = _log_uniform(rng, 1.0 / config.aspect, config.aspect)
    shear = rng.uniform(-config.shear, config.shear)
    half = max(min(h1, w1) / 2.0, 1.0)
    px, py = rng.uniform(-config.perspective, config.perspective, size=2) / half
    t = rng.uniform(-config.translation, config.translation, size=2) * np.array([w1, h1])

    cos, sin = math.cos(angle), math.sin(angle)
    rot = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    sca = np.diag([scale * math.sqrt(aspect), scale / math.sqrt(aspect), 1.0])
    she = np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    per = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [px, py, 1.0]])
    to_origin = np.array([[1.0, 0.0, -c1[0]], [0.0, 1.0, -c1[1]], [0.0, 0.0, 1.0]])
    from_origin = np.array([[1.0, 0.0, c2[0] + t[0]], [0.0, 1.0, c2[1] + t[1]], [0.0, 0.0, 1.0]])
    m = from_origin @ per @ rot @ sca @ she @ to_origin
    return m / m[2, 2]


def apply_homography(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map points ``(N, 2)`` (x, y) through ``m`` ``(3, 3)``; returns ``(N, 2)`` float64."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    p = xy @ m[:, :2].T + m[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def ground_truth_field(
    m: np.ndarray, shape1: tuple[int, int], shape2: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Dense correspondence of every image-1 pixel centre under ``m``.

    Returns ``field`` ``(H1, W1, 2)`` float32 with ``field[y, x] = (x2, y2)``, and ``inside``
    ``(H1, W1)`` bool: the point maps in front of the camera (w > 0) and inside image 2's pixel
    centre box ``[0, W2 - 1] x [0, H2 - 1]``.
    """
    h1, w1 = shape1
    h2, w2 = shape2
    ys, xs = np.mgrid[0:h1, 0:w1].astype(np.float64)
    den = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x2 = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / den
        y2 = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / den
    inside = (den > 0) & (x2 >= 0) & (x2 <= w2 - 1) & (y2 >= 0) & (y2 <= h2 - 1)
    field = np.stack([x2, y2], axis=-1)
    field[~inside] = -1.0
    return field.astype(np.float32), inside


def warp_scene(
    scene: np.ndarray,
    m_scene_to_out: np.ndarray,
    out_shape: tuple[int, int],
    nearest: bool = False,
) -> np.ndarray:
    """Resample ``scene`` so that ``out(m @ p) = scene(p)``; outside the scene gives 0.

    ``scene`` ``(H, W)`` float32 or uint8; ``m_scene_to_out`` ``(3, 3)`` maps scene pixel
    centres to output pixel centres (OpenCV's convention, integer coordinates = centres).
    """
    h, w = out_shape
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpPerspective(
        scene,
        m_scene_to_out,
        (w, h),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


# --------------------------------------------------------------------------------------------
# Radiometry
# --------------------------------------------------------------------------------------------


def to_linear_intensity(data: np.ndarray, kind: str, display_as: str = "intensity") -> np.ndarray:
    """Values of ``kind`` -> linear intensity (power), float32 ``(H, W)``.

    'power' as is, 'amplitude' squared, 'db' ``10 ** (x / 10)``. 'display' (8-bit products):
    ``display_as='intensity'`` reads ``v / 255`` as intensity relative to the clip level (the
    Sentinel-1 training tiles: intensity / 99 % quantile, clipped, times 255); 'amplitude'
    reads it as amplitude and squares it. Zero display values are raised to half a grey level
    so that speckle and log compression stay defined.
    """
    x = np.asarray(data, dtype=np.float32)
    if kind == "power":
        return np.maximum(x, 0.0)
    if kind == "amplitude":
        return np.square(x)
    if kind == "db":
        return np.power(np.float32(10.0), x / np.float32(10.0)).astype(np.float32)
    if kind == "display":
        v = np.maximum(x, 0.5) / np.float32(255.0)
        if display_as == "intensity":
            return v.astype(np.float32)
        if display_as == "amplitude":
            return np.square(v).astype(np.float32)
        raise ConfigError(
            f"unknown display_as {display_as!r}", "use display_as: intensity or amplitude"
        )
    raise ConfigError(f"unknown image kind {kind!r}", "use power, amplitude, db or display")


def _masked_box(x: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Local mean of ``x`` over valid pixels in a ``size`` box; also the valid count fraction."""
    m = mask.astype(np.float32)
    num = cv2.boxFilter(x * m, -1, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT)
    den = cv2.boxFilter(m, -1, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
    return mean.astype(np.float32), den


def smooth_intensity(
    intensity: np.ndarray,
    mask: np.ndarray,
    method: str = "box",
    size: int = 3,
    source_looks: float = 4.4,
) -> np.ndarray:
    """Reduce a scene's own speckle in linear intensity (nodata-aware).

    'box': ``size x size`` multi-look (mean of valid pixels). 'lee': Lee filter with the
    speckle coefficient of variation ``1/sqrt(source_looks)``. 'median': median of the log
    intensity (sizes 3, 5). 'none': unchanged. ``(H, W)`` float32 in and out; invalid pixels 0.
    """
    x = np.asarray(intensity, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    if method == "none" or size <= 1:
        out = x.copy()
    elif method == "box":
        out, _ = _masked_box(x, m, size)
    elif method == "lee":
        mean, _ = _masked_box(x, m, size)
        mean_sq, _ = _masked_box(x * x, m, size)
        var = np.maximum(mean_sq - mean * mean, 0.0)
        cu2 = np.float32(1.0 / max(source_looks, 1e-3))
        var_x = np.maximum((var - mean * mean * cu2) / (1.0 + cu2), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(var > 0, var_x / np.maximum(var, 1e-30), 0.0).astype(np.float32)
        out = mean + k * (x - mean)
    elif method == "median":
        logx = np.log(np.maximum(x, 1e-12)).astype(np.float32)
        out = np.exp(cv2.medianBlur(logx, size)).astype(np.float32)
    else:
        raise ConfigError(f"unknown smoothing {method!r}", f"use one of {', '.join(SMOOTHING)}")
    out = np.where(m, np.maximum(out, 0.0), 0.0)
    return out.astype(np.float32)


def speckle(shape: tuple[int, ...], looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative speckle ``Gamma(shape=L, scale=1/L)``: mean 1, variance ``1/L``."""
    return rng.gamma(looks, 1.0 / looks, size=shape).astype(np.float32)


def radiometric(
    intensity: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: SynthConfig,
    add_speckle: bool,
) -> np.ndarray:
    """Speckle, noise floor, gain ramp, gain and gamma for one side (linear intensity)."""
    x = intensity
    h, w = x.shape
    if add_speckle and config.speckle and config.looks[1] > 0:
        looks = _log_uniform(rng, max(config.looks[0], 1e-3), config.looks[1])
        x = x * speckle((h, w), looks, rng)
    valid = x[mask]
    median = float(np.median(valid[:: max(1, valid.size // 4096)])) if valid.size else 1.0
    if config.noise_prob > 0 and rng.random() < config.noise_prob:
        level = median * 10.0 ** (rng.uniform(*config.noise_floor_db) / 10.0)
        x = x + rng.exponential(level, size=(h, w)).astype(np.float32)
    if config.ramp_db > 0:
        gx, gy = rng.uniform(-1.0, 1.0, size=2)
        amp = rng.uniform(0.0, config.ramp_db) / max(abs(gx) + abs(gy), 1e-6) / 2.0
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        ramp_db = amp * (gx * xs[None, :] + gy * ys[:, None])
        x = x * np.power(np.float32(10.0), ramp_db / np.float32(10.0))
    gain = 10.0 ** (rng.uniform(*config.gain_db) / 10.0)
    gamma = _log_uniform(rng, *config.gamma)
    scale = max(median, 1e-12)
    x = np.power(np.maximum(x, 0.0) / np.float32(scale), np.float32(gamma)) * np.float32(
        scale * gain
    )
    return np.where(mask, x, 0.0).astype(np.float32)


def represent(
    intensity: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config: SynthConfig
) -> tuple[np.ndarray, str]:
    """Linear power as the network will meet it: ``(values, kind)`` for ``preprocess``.

    With probability ``display_prob`` an 8-bit display product (see module docstring), else
    the power itself.
    """
    if config.display_prob <= 0 or rng.random() >= config.display_prob:
        return intensity, "power"
    mode = config.display_modes[int(rng.integers(len(config.display_modes)))]
    v = intensity if mode == "intensity" else np.sqrt(intensity)
    sample = v[mask]
    q = float(np.percentile(sample[:: max(1, sample.size // 20000)], 99.0)) if sample.size else 1
    out = np.round(np.clip(v / max(q, 1e-30), 0.0, 1.0) * 255.0).astype(np.float32)
    return np.where(mask, out, 0.0).astype(np.float32), "display"


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


@dataclass
class IntensityPair:
    """A pair before normalization: both sides in linear intensity (power).

    Attributes:
        intensity1, intensity2: ``(c, c)`` float32 linear intensity after speckle, noise, gain
            ramp, gain and contrast (:func:`radiometric`); invalid pixels 0.
        mask1, mask2: ``(c, c)`` bool, valid image content.
        homography: ``(3, 3)`` float64, image-1 pixel centres -> image-2 pixel centres.
        field: ``(c, c, 2)`` float32, ``field[y, x] = (x2, y2)`` position in image 2.
        valid: ``(c, c)`` bool, the ground truth of that pixel is usable.
    """

    intensity1: np.ndarray
    intensity2: np.ndarray
    mask1: np.ndarray
    mask2: np.ndarray
    homography: np.ndarray
    field: np.ndarray
    valid: np.ndarray


def make_pair(
    scene1: np.ndarray,
    mask1: np.ndarray,
    origin: tuple[int, int],
    crop: int,
    rng: np.random.Generator,
    config: SynthConfig = SynthConfig(),
    preprocess_config: PreprocessConfig = PreprocessConfig(),
    scene2: np.ndarray | None = None,
    mask2: np.ndarray | None = None,
    homography: np.ndarray | None = None,
) -> SynthPair:
    """Build one pair from a scene in linear intensity.

    Args:
        scene1: ``(H, W)`` float32 linear intensity, own speckle already smoothed
            (:func:`smooth_intensity`) for single-image pairs.
        mask1: ``(H, W)`` bool valid pixels of ``scene1``.
        origin: ``(x0, y0)`` of image 1's top-left pixel in the scene; the crop must fit.
        crop: side of both images.
        rng: random generator (the only source of randomness).
        config: synthesis ranges.
        preprocess_config: the normalization shared with inference.
        scene2, mask2: a second date on the same grid (multi-date pair), or None.
        homography: fixed image-1 -> image-2 transform instead of a random one.

    Returns a :class:`SynthPair`; ``image2(H @ p) ~ image1(p)`` wherever ``valid``.
    """
    p = make_intensity_pair(
        scene1, mask1, origin, crop, rng, config, scene2=scene2, mask2=mask2,
        homography=homography,
    )  # fmt: skip
    img1 = _normalize(p.intensity1, p.mask1, rng, config, preprocess_config)
    img2 = _normalize(p.intensity2, p.mask2, rng, config, preprocess_config)
    return SynthPair(img1, img2, p.mask1, p.mask2, p.homography, p.field, p.valid)


def make_intensity_pair(
    scene1: np.ndarray,
    mask1: np.ndarray,
    origin: tuple[int, int],
    crop: int,
    rng: np.random.Generator,
    config: SynthConfig = SynthConfig(),
    scene2: np.ndarray | None = None,
    mask2: np.ndarray | None = None,
    homography: np.ndarray | None = None,
) -> IntensityPair:
    """Geometry and radiometry of :func:`make_pair` without the final representation and
    normalization: both sides stay linear intensity (arguments as for :func:`make_pair`)."""
    x0, y0 = int(origin[0]), int(origin[1])
    h, w = scene1.shape
    if x0 < 0 or y0 < 0 or x0 + crop > w or y0 + crop > h:
        raise ValueError(f"crop {crop} at {origin} does not fit the {w}x{h} scene")
    multidate = scene2 is not None
    if not multidate:
        scene2, mask2 = scene1, mask1
    elif mask2 is None:
        mask2 = np.ones_like(mask1)
    m = random_homography(rng, (crop, crop), config=config) if homography is None else homography
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    scene_to_2 = m @ shift

    sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
    base1 = scene1[sl]
    vmask1 = mask1[sl].copy()
    base2 = warp_scene(scene2, scene_to_2, (crop, crop))
    vmask2 = warp_scene(mask2.astype(np.uint8), scene_to_2, (crop, crop), nearest=True) > 0
    # bilinear taps next to nodata/outside mix in zeros: drop a 1-px rim of the warped mask
    vmask2 = cv2.erode(vmask2.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0

    field, inside = ground_truth_field(m, (crop, crop), (crop, crop))
    valid = inside & vmask1 & mask2[sl]
    ix = np.clip(np.rint(field[..., 0]).astype(np.int64), 0, crop - 1)
    iy = np.clip(np.rint(field[..., 1]).astype(np.int64), 0, crop - 1)
    valid &= vmask2[iy, ix]

    add = config.multidate_speckle if multidate else True
    side1 = radiometric(base1, vmask1, rng, config, add_speckle=add)
    side2 = radiometric(base2, vmask2, rng, config, add_speckle=add)
    return IntensityPair(side1, side2, vmask1, vmask2, m, field, valid)


def _normalize(
    intensity: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: SynthConfig,
    preprocess_config: PreprocessConfig,
) -> np.ndarray:
    values, kind = represent(intensity, mask, rng, config)
    image, _ = preprocess(values, mask, kind, preprocess_config)
    return image
