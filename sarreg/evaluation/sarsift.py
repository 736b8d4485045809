"""SAR-SIFT keypoints and descriptors (Dellinger, Delon, Gousseau, Michel, Tupin: "SAR-SIFT: A
SIFT-like algorithm for SAR images", IEEE TGRS 53(1), 2015), implemented from the paper.

1. **ROEWA gradient** at scale ``alpha``: on each side of a pixel, the exponentially weighted
   average of the intensity (weights ``exp(-(|dx| + |dy|) / alpha)`` over a half window, the
   central line excluded); the horizontal gradient is the log ratio ``G_x = log(M_right /
   M_left)``, the vertical one ``G_y = log(M_below / M_above)``. Ratios make it insensitive to
   multiplicative speckle and invariant to a multiplicative constant on the image.
   Magnitude ``sqrt(G_x^2 + G_y^2)``, orientation ``atan2(G_y, G_x)`` (x right, y down).
2. **Multi-scale SAR-Harris**: at scales ``alpha_i = alpha_0 c^i``,
   ``C = g_{sqrt(2) alpha} * [[G_x^2, G_x G_y], [G_x G_y, G_y^2]]``,
   ``R = det(C) - d trace(C)^2`` with ``d = 0.04``; keypoints are 3x3 spatial local maxima of
   ``R`` above a threshold at each scale, the strongest ``max_keypoints`` over all scales.
3. **Orientation**: 36-bin histogram of the gradient orientations in a disc of radius
   ``6 alpha``, weighted by magnitude and a Gaussian of ``2 alpha``; the peak (and secondary
   peaks above 80 % of it, as extra keypoints), refined by a parabola.
4. **GLOH-like descriptor**: a log-polar disc of radius ``12 alpha`` (a centre of radius
   ``0.25 R`` and two rings of 8 sectors up to ``0.75 R`` and ``R``: 17 spatial bins) with 8
   orientation bins each (136 values), relative to the keypoint orientation; L2 normalized,
   clipped at 0.2 and normalized again.

Everything is vectorized: the ROEWA averages are separable filters (OpenCV), and orientations
and descriptors sample the gradient maps at fixed polar grids around all keypoints at once
(bilinear, ``cv2.remap``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SarSiftConfig:
    """SAR-SIFT settings (defaults from the paper where it gives them).

    Attributes:
        alpha0: first ROEWA scale (paper: 2).
        factor: ratio ``c`` between successive scales (paper: 2^(1/3)).
        n_scales: number of scales (paper: 8).
        d: SAR-Harris constant (paper: 0.04).
        threshold: floor on the SAR-Harris response (natural-log ratios). The paper's 0.8
            belongs to its own gradient scaling; here, as for the other detectors compared,
            the ``max_keypoints`` strongest responses are kept, and the floor only drops flat
            areas (a higher one leaves too few keypoints on smooth multi-looked products).
        max_keypoints: keypoints kept by response (candidates, and again after secondary
            orientations added keypoints).
        border: keypoints closer than this many pixels to the image edge are dropped.
        secondary_peak: orientation peaks above this fraction of the highest give extra
            keypoints.
    """

    alpha0: float = 2.0
    factor: float = 2.0 ** (1.0 / 3.0)
    n_scales: int = 8
    d: float = 0.04
    threshold: float = 1e-4
    max_keypoints: int = 2000
    border: int = 8
    secondary_peak: float = 0.8


@dataclass
class SarSiftFeatures:
    """SAR-SIFT keypoints of one image.

    Attributes:
        keypoints: ``(N, 2)`` float32 pixel centres ``(x, y)``.
        scales: ``(N,)`` float32 ROEWA ``alpha`` of each keypoint.
        orientations: ``(N,)`` float32 radians.
        scores: ``(N,)`` float32 SAR-Harris response.
        descriptors: ``(N, 136)`` float32, unit L2 norm.
    """

    keypoints: np.ndarray
    scales: np.ndarray
    orientations: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray


def _half_kernels(alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized 1-D kernels (correlation order, length 2R+1): one-sided ``+`` and ``-``
    exponentials along the derivative axis (centre excluded) and the symmetric smoothing."""
    r = max(1, int(math.ceil(3.0 * alpha)))
    j = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-np.abs(j) / alpha)
    plus = np.where(j > 0, w, 0.0)
    minus = np.where(j < 0, w, 0.0)
    return (
        (plus / plus.sum()).astype(np.float32),
        (minus / minus.sum()).astype(np.float32),
        (w / w.sum()).astype(np.float32),
    )


def roewa_gradient(intensity: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """ROEWA log-ratio gradient ``(G_x, G_y)``, each ``(H, W)`` float32, of a linear
    intensity (or amplitude) image ``(H, W)`` at scale ``alpha`` (see the module docstring).

    Non-positive averages are floored at ``1e-6`` times the image mean, so the result is
    invariant to multiplying the image by a positive constant."""
    x = np.asarray(intensity, dtype=np.float32)
    mean = float(np.mean(x, dtype=np.float64))
    floor = np.float32(max(mean, 1e-30) * 1e-6)
    plus, minus, smooth = _half_kernels(alpha)
    border = cv2.BORDER_REFLECT

    def avg(kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        return np.maximum(cv2.sepFilter2D(x, cv2.CV_32F, kx, ky, borderType=border), floor)

    gx = np.log(avg(plus, smooth)) - np.log(avg(minus, smooth))
    gy = np.log(avg(smooth, plus)) - np.log(avg(smooth, minus))
    return gx.astype(np.float32), gy.astype(np.float32)


def sar_harris(gx: np.ndarray, gy: np.ndarray, alpha: float, d: float = 0.04) -> np.ndarray:
    """SAR-Harris response ``(H, W)`` float32 from ROEWA gradients at scale ``alpha``."""
    sigma = math.sqrt(2.0) * alpha
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    cxx, cyy, cxy = blur(gx * gx), blur(gy * gy), blur(gx * gy)
    return (cxx * cyy - cxy * cxy - np.float32(d) * (cxx + cyy) ** 2).astype(np.float32)


def scales_of(config: SarSiftConfig) -> list[float]:
    """ROEWA scales ``alpha_i = alpha0 * factor^i``, ``i = 0..n_scales-1``."""
    return [config.alpha0 * config.factor**i for i in range(config.n_scales)]


# polar sample grids in units of the keypoint's alpha ---------------------------------------

_ORI_R = (np.arange(6) + 0.5) / 6.0 * 6.0  # radii up to 6 alpha
_ORI_PHI = np.arange(24) * (2 * np.pi / 24)
_DESC_NR, _DESC_NA = 16, 32
_DESC_R = (np.arange(_DESC_NR) + 0.5) / _DESC_NR  # fraction of 12 alpha
_DESC_PHI = (np.arange(_DESC_NA) + 0.5) * (2 * np.pi / _DESC_NA)


def _sample(maps: tuple[np.ndarray, ...], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Bilinear samples of each ``(H, W)`` map at positions ``x, y`` ``(N, S)`` (0 outside)."""
    mx = np.ascontiguousarray(x, dtype=np.float32)
    my = np.ascontiguousarray(y, dtype=np.float32)
    out = []
    for m in maps:
        chunks = []
        # cv2.remap needs map sides below 32767
        for i in range(0, mx.shape[0], 4096):
            chunks.append(
                cv2.remap(m, mx[i : i + 4096], my[i : i + 4096], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            )  # fmt: skip
        out.append(np.concatenate(chunks, axis=0) if chunks else np.zeros(mx.shape, np.float32))
    return out


def _orientations(
    gx: np.ndarray, gy: np.ndarray, xy: np.ndarray, alpha: float, secondary: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dominant orientations: ``(index into xy (K,), angle (K,))`` with secondary peaks."""
    n = len(xy)
    rr, pp = np.meshgrid(_ORI_R * alpha, _ORI_PHI, indexing="ij")
    rr, pp = rr.ravel(), pp.ravel()
    sx = xy[:, :1] + (rr * np.cos(pp))[None]
    sy = xy[:, 1:] + (rr * np.sin(pp))[None]
    vx, vy = _sample((gx, gy), sx, sy)
    mag = np.hypot(vx, vy) * (np.exp(-(rr**2) / (2 * (2 * alpha) ** 2)) * rr)[None]
    ang = np.mod(np.arctan2(vy, vx), 2 * np.pi)
    nb = 36
    b = np.minimum((ang / (2 * np.pi) * nb).astype(np.int64), nb - 1)
    hist = np.zeros((n, nb))
    np.add.at(hist, (np.repeat(np.arange(n), b.shape[1]), b.ravel()), mag.ravel())
    # smooth circularly [1 4 6 4 1] / 16
    k = np.array([1, 4, 6, 4, 1], np.float64) / 16
    hist = sum(k[i] * np.roll(hist, i - 2, axis=1) for i in range(5))
    left, right = np.roll(hist, 1, axis=1), np.roll(hist, -1, axis=1)
    top = hist.max(axis=1, keepdims=True)
    peak = (hist > left) & (hist >= right) & (hist >= secondary * top) & (top > 0)
    ki, kb = np.nonzero(peak)
    hl, hc, hr = left[ki, kb], hist[ki, kb], right[ki, kb]
    den = hl - 2 * hc + hr
    off = np.where(np.abs(den) > 1e-12, 0.5 * (hl - hr) / np.where(den == 0, 1, den), 0.0)
    angle = (kb + 0.5 + off) * (2 * np.pi / nb)
    return ki, np.mod(angle, 2 * np.pi)


def _descriptors(
    gx: np.ndarray, gy: np.ndarray, xy: np.ndarray, theta: np.ndarray, alpha: float
) -> np.ndarray:
    """GLOH-like descriptors ``(N, 136)`` float32, unit norm (see the module docstring)."""
    n = len(xy)
    radius = 12.0 * alpha
    rr, pp = np.meshgrid(_DESC_R, _DESC_PHI, indexing="ij")
    rr, pp = rr.ravel(), pp.ravel()  # (S,) relative radius, angle in the keypoint frame
    ring = np.where(rr <= 0.25, 0, np.where(rr <= 0.75, 1, 2))
    sector = np.minimum((pp / (2 * np.pi) * 8).astype(np.int64), 7)
    spatial = np.where(ring == 0, 0, 1 + (ring - 1) * 8 + sector)  # (S,) in 0..16
    ang = pp[None] + theta[:, None]  # (N, S)
    sx = xy[:, :1] + radius * rr[None] * np.cos(ang)
    sy = xy[:, 1:] + radius * rr[None] * np.sin(ang)
    vx, vy = _sample((gx, gy), sx, sy)
    mag = np.hypot(vx, vy) * rr[None]  # area element of the polar grid
    rel = np.mod(np.arctan2(vy, vx) - theta[:, None], 2 * np.pi) / (2 * np.pi) * 8 - 0.5
    o0 = np.floor(rel).astype(np.int64)
    f = rel - o0
    o0 %= 8
    o1 = (o0 + 1) % 8
    desc = np.zeros((n, 17 * 8))
    rows = np.repeat(np.arange(n), rr.size)
    sp = np.tile(spatial, n)
    np.add.at(desc, (rows, sp * 8 + o0.ravel()), (mag * (1 - f)).ravel())
    np.add.at(desc, (rows, sp * 8 + o1.ravel()), (mag * f).ravel())
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    desc = np.minimum(desc, 0.2)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    return desc.astype(np.float32)


def detect_and_describe(
    intensity: np.ndarray, mask: np.ndarray | None = None, config: SarSiftConfig | None = None
) -> SarSiftFeatures:
    """SAR-SIFT keypoints and descriptors of a linear intensity (or amplitude) image.

    Args:
        intensity: ``(H, W)`` non-negative float; invalid pixels are filled with the median of
            the valid ones.
        mask: ``(H, W)`` bool, True where keypoints are allowed (and values valid).
        config: :class:`SarSiftConfig`.

    Returns:
        :class:`SarSiftFeatures`, sorted by decreasing response.
    """
    cfg = config or SarSiftConfig()
    x = np.asarray(intensity, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"intensity must be 2-D, got shape {x.shape}")
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)
    good = m & np.isfinite(x) & (x > 0)
    fill = np.float32(np.median(x[good])) if good.any() else np.float32(1.0)
    x = np.where(good, x, fill).astype(np.float32)
    h, w = x.shape
    b = cfg.border
    region = np.zeros((h, w), bool)
    region[b : h - b, b : w - b] = True
    region &= m
    cands = []
    grads = []
    for i, alpha in enumerate(scales_of(cfg)):
        gx, gy = roewa_gradient(x, alpha)
        grads.append((gx, gy))
        r = sar_harris(gx, gy, alpha, cfg.d)
        is_max = r >= cv2.dilate(r, np.ones((3, 3), np.uint8))
        ys, xs = np.nonzero(is_max & region & (r > cfg.threshold))
        cands.append(np.stack([xs, ys, np.full(len(xs), i), r[ys, xs]], axis=1))
    allc = np.concatenate(cands) if cands else np.zeros((0, 4))
    order = np.argsort(-allc[:, 3], kind="stable")[: cfg.max_keypoints]
    allc = allc[order]
    kps, scl, ori, sco, des = [], [], [], [], []
    for i, alpha in enumerate(scales_of(cfg)):
        sel = allc[:, 2] == i
        if not sel.any():
            continue
        xy = allc[sel, :2].astype(np.float64)
        gx, gy = grads[i]
        ki, theta = _orientations(gx, gy, xy, alpha, cfg.secondary_peak)
        if len(ki) == 0:
            continue
        kps.append(xy[ki])
        scl.append(np.full(len(ki), alpha))
        ori.append(theta)
        sco.append(allc[sel, 3][ki])
        des.append(_descriptors(gx, gy, xy[ki], theta, alpha))
    if not kps:
        return SarSiftFeatures(
            np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
            np.zeros(0, np.float32), np.zeros((0, 136), np.float32),
        )  # fmt: skip
    score = np.concatenate(sco)
    order = np.argsort(-score, kind="stable")[: cfg.max_keypoints]
    log.debug("SAR-SIFT: %d keypoints (%d candidates)", len(order), len(allc))
    return SarSiftFeatures(
        keypoints=np.concatenate(kps)[order].astype(np.float32),
        scales=np.concatenate(scl)[order].astype(np.float32),
        orientations=np.concatenate(ori)[order].astype(np.float32),
        scores=score[order].astype(np.float32),
        descriptors=np.concatenate(des)[order],
    )
