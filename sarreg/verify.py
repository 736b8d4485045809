"""Independent check of a registration: does the moving image, mapped by the estimate, line up
with the reference pixel by pixel?

The check does not use the keypoints that produced the estimate. The moving image is warped
onto the reference grid by the estimated transform (OpenCV ``warpPerspective``); on a grid of
windows over the overlap, each warped-moving window is located in the reference by normalized
cross-correlation (OpenCV ``matchTemplate``, ``TM_CCOEFF_NORMED``) within a small search margin.
A window *agrees* when its correlation peak is clear (``min_ncc``), not on the margin, and
within ``tolerance`` px of where the estimate puts it. The verdict passes when enough of the
windows tried agree.

Coordinates: ``(x, y)`` pixel centres, top-left pixel centre at ``(0, 0)``, at the resolution of
the arrays given (the work or coarse resolution of the pipeline). ``matrix`` maps moving pixel
centres to reference pixel centres (3x3), as everywhere in sarreg.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

#: windows of the grid whose valid fraction (both images) is below this are not tried
MIN_VALID = 0.9
#: windows of the grid whose standard deviation (either image, [0, 1] values) is below this are
#: not tried (featureless: water, nodata filled, saturated)
MIN_STD = 0.02


class Verdict(str, enum.Enum):
    """Outcome of :func:`verify_registration`."""

    PASS = "pass"  # enough windows agree with the estimate
    FAIL = "fail"  # the images do not line up under the estimate
    INCONCLUSIVE = "inconclusive"  # too few textured windows in the overlap to tell


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of :func:`verify_registration` (calibrated on the bundled real pairs).

    Attributes:
        grid: windows per side of the grid over the reference image.
        window: window side in pixels; ``None`` = from the image size (``min(H, W) / 5``,
            clipped to ``[32, 96]``).
        margin: search margin in pixels on each side of the predicted position.
        tolerance: a window agrees when its residual shift is at most this (pixels).
        min_ncc: a window agrees only when its correlation peak reaches this.
        min_windows: fewer windows tried than this: :attr:`Verdict.INCONCLUSIVE`.
        min_agree: fraction of the windows tried that must agree for :attr:`Verdict.PASS`.
        verdict_sigma: the verdict correlates both images smoothed by a Gaussian of this
            sigma (pixels; OpenCV ``GaussianBlur``), as a multilook would: two independently
            speckled single-look images hardly correlate pixel by pixel even when aligned,
            their smoothed scenes do. The unsmoothed correlation (a finer peak, not widened
            by the smoothing) is kept per window for :func:`window_correction`. ``0``: the
            verdict on the unsmoothed windows.
        verdict_min_ncc: ``min_ncc`` of the smoothed correlation.
    """

    grid: int = 8
    window: int | None = None
    margin: int = 6
    tolerance: float = 1.5
    min_ncc: float = 0.25
    min_windows: int = 4
    min_agree: float = 0.6
    verdict_sigma: float = 2.0
    verdict_min_ncc: float = 0.25


@dataclass
class Verification:
    """Result of :func:`verify_registration`.

    Attributes:
        verdict: :class:`Verdict`.
        windows_tried: windows with enough valid, textured pixels in both images.
        windows_agree: of those, windows whose correlation peak is clear and within
            ``tolerance`` px of the estimate.
        median_px, p90_px: median and 90th percentile of the residual shift over the windows
            tried (pixels at the resolution checked; per window from its unsmoothed peak where
            that is clear, else from the smoothed one; a window whose peak is on the search
            margin counts as ``margin`` px); ``nan`` when none was tried.
        agree_median_px: median residual over the agreeing windows (``nan`` when none).
        pixel_size: pixels checked per full-resolution reference pixel ... see ``scale``.
        scale: full-resolution reference pixels per checked pixel (to convert the figures).
        windows: per window tried: ``x, y`` (window centre, reference pixels), ``dx, dy``
            (residual shift: where the moving content lies in the reference minus where the
            estimate puts it), ``ncc`` (peak correlation), ``clear`` (a clear peak inside the
            margin), all of the unsmoothed correlation; ``vdx, vdy, vncc, vclear,
            verdict_residual_px`` the same of the smoothed one (``verdict_sigma > 0``);
            ``agree`` (either peak clear and within ``tolerance``).
    """

    verdict: Verdict
    windows_tried: int
    windows_agree: int
    median_px: float
    p90_px: float
    agree_median_px: float
    scale: float = 1.0
    windows: list[dict] = field(default_factory=list)

    @property
    def agree_fraction(self) -> float:
        return self.windows_agree / self.windows_tried if self.windows_tried else 0.0

    def to_dict(self) -> dict:
        """JSON-ready record (the report's ``verification``), figures also in full-res px."""
        return {
            "verdict": self.verdict.value,
            "windows_tried": int(self.windows_tried),
            "windows_agree": int(self.windows_agree),
            "agree_fraction": round(self.agree_fraction, 4),
            "median_residual_px": _r(self.median_px * self.scale),
            "p90_residual_px": _r(self.p90_px * self.scale),
            "agree_median_residual_px": _r(self.agree_median_px * self.scale),
            "checked_pixel_size_ref_px": _r(self.scale),
            "windows": [
                {k: (_r(v) if isinstance(v, float) else v) for k, v in w.items()}
                for w in self.windows
            ],
        }


def _r(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


def warp_to_reference(
    img_mov: np.ndarray, mask_mov: np.ndarray | None, matrix: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The moving image and its validity on the reference grid of ``shape`` ``(H, W)``.

    ``matrix``: 3x3, moving pixel centre -> reference pixel centre. Returns ``(H, W)`` float32
    (bilinear) and ``(H, W)`` bool (pixels mapped from valid moving pixels; outside = False).
    """
    import cv2

    h, w = shape
    m = np.asarray(matrix, dtype=np.float64)
    src = np.ascontiguousarray(img_mov, dtype=np.float32)
    valid = np.ones(img_mov.shape, np.uint8) if mask_mov is None else mask_mov.astype(np.uint8)
    warped = cv2.warpPerspective(src, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    # a pixel is valid when its whole bilinear footprint is: erode the mask by one pixel
    vmask = cv2.warpPerspective(
        cv2.erode(valid, np.ones((3, 3), np.uint8)), m, (w, h), flags=cv2.INTER_NEAREST,
        borderValue=0,
    )  # fmt: skip
    return warped, vmask.astype(bool)


def inverse_maps(inverse, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps ``(H, W)`` float32 x and y of a point function ``inverse``
    (reference px ``(N, 2)`` -> moving px) over a reference grid of ``shape``.

    ``inverse`` is evaluated on nodes every :data:`sarreg.warp.MAPPING_STEP` pixels and
    interpolated in between, as for the resampled output (:mod:`sarreg.warp`): a smooth
    mapping's positions stay within 1/32 px, at a 250th of the evaluations. Pixels that
    interpolate a node without a position get -1 (outside)."""
    from rasterio.windows import Window

    from sarreg.warp import mapping_source_coords

    h, w = shape
    xs, ys, ok = mapping_source_coords(inverse, Window(0, 0, w, h))
    return np.where(ok, xs, -1.0).astype(np.float32), np.where(ok, ys, -1.0).astype(np.float32)


def _remap_to_reference(img_mov, mask_mov, inverse, shape):
    """As :func:`warp_to_reference` through a point function reference px -> moving px
    (:func:`inverse_maps`)."""
    import cv2

    mx, my = inverse_maps(inverse, shape)
    src = np.ascontiguousarray(img_mov, dtype=np.float32)
    valid = np.ones(img_mov.shape, np.uint8) if mask_mov is None else mask_mov.astype(np.uint8)
    warped = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderValue=0.0)
    vmask = cv2.remap(cv2.erode(valid, np.ones((3, 3), np.uint8)), mx, my, cv2.INTER_NEAREST,
                      borderValue=0)  # fmt: skip
    return warped, vmask.astype(bool)


def _window_size(shape: tuple[int, int], cfg: VerifyConfig) -> int:
    if cfg.window is not None:
        return int(cfg.window)
    return int(np.clip(min(shape) // 5, 32, 96))


def _grid_origins(lo: int, hi: int, size: int, win: int, m: int, grid: int) -> np.ndarray:
    """Origins of the reference search areas (side ``win + 2 m``) along one axis, spread over
    the overlap ``[lo, hi)`` and inside ``[0, size)``: at most ``grid``, at least half a
    window apart."""
    first = min(max(0, lo - m), size - win - 2 * m)
    last = max(min(size - win - 2 * m, hi - win - m), first)
    n = int(min(grid, 1 + (last - first) // max(1, win // 2)))
    return np.unique(np.linspace(first, last, max(n, 1)).round().astype(int))


def _shrink_finer_moving(img_mov, mask_mov, matrix, inverse):
    """A moving image finer than the reference (more than 1.5 moving pixels per reference
    pixel) area-averaged to about the reference pixel size before it is warped, so that its
    speckle is averaged as the reference's, not aliased. Returns ``(img, mask, matrix,
    inverse)`` for the shrunk image (``matrix``/``inverse`` composed with the shrink)."""
    import cv2

    m = np.asarray(matrix, dtype=np.float64)
    det = abs(float(np.linalg.det(m[:2, :2])))
    k = 1.0 / np.sqrt(det) if det > 0 else 1.0  # moving px per reference px
    if k < 1.5:
        return img_mov, mask_mov, matrix, inverse
    h, w = img_mov.shape[:2]
    size = (max(8, round(w / k)), max(8, round(h / k)))
    small = cv2.resize(np.ascontiguousarray(img_mov, np.float32), size,
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    msk = None
    if mask_mov is not None:  # valid only where the whole averaged block was
        frac = cv2.resize(np.asarray(mask_mov, np.float32), size, interpolation=cv2.INTER_AREA)
        msk = frac > 0.999
    fx, fy = size[0] / w, size[1] / h
    s_mat = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    inv_s = np.linalg.inv(s_mat)
    new_inverse = None
    if inverse is not None:

        def new_inverse(xy: np.ndarray) -> np.ndarray:
            p = inverse(xy)
            return p * np.array([fx, fy]) + np.array([0.5 * fx - 0.5, 0.5 * fy - 0.5])

    return small, msk, m @ inv_s, new_inverse


def _subpixel(surface: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Parabola through the peak and its two neighbours along each axis (offsets in px)."""

    def par(a: float, b: float, c: float) -> float:
        d = a - 2.0 * b + c
        return 0.0 if d >= 0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))

    h, w = surface.shape
    ox = par(*surface[iy, ix - 1 : ix + 2]) if 0 < ix < w - 1 else 0.0
    oy = par(*surface[iy - 1 : iy + 2, ix]) if 0 < iy < h - 1 else 0.0
    return ox, oy


def _subpixel_iterative(
    area: np.ndarray, tmpl: np.ndarray, surface: np.ndarray, iy: int, ix: int, rounds: int = 3
) -> tuple[float, float]:
    """Sub-pixel offset ``(ox, oy)`` of ``tmpl`` in ``area`` around the integer peak.

    A parabola through the correlation peak is biased towards the integer position (narrow
    speckle peaks); so the template is shifted by the current estimate (bilinear, OpenCV) and
    the parabola is fitted again on the 3x3 correlations around the peak, ``rounds`` times.
    """
    import cv2

    ox, oy = _subpixel(surface, iy, ix)
    h, w = tmpl.shape
    sub = np.ascontiguousarray(area[iy - 1 : iy + h + 1, ix - 1 : ix + w + 1])
    for _ in range(rounds):
        shift = np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]])
        moved = cv2.warpAffine(tmpl, shift, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        s3 = np.nan_to_num(cv2.matchTemplate(sub, moved, cv2.TM_CCOEFF_NORMED), nan=-1.0)
        rx, ry = _subpixel(s3, 1, 1)
        ox, oy = float(np.clip(ox + rx, -1, 1)), float(np.clip(oy + ry, -1, 1))
        if abs(rx) < 0.01 and abs(ry) < 0.01:
            break
    return ox, oy


def _smooth(img: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """``(H, W)`` float32 ``img`` smoothed by a Gaussian of ``sigma`` px over its ``valid``
    pixels only (normalized convolution: invalid pixels neither darken nor brighten their
    neighbours)."""
    import cv2

    v = valid.astype(np.float32)
    num = cv2.GaussianBlur(np.where(valid, img, 0.0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(v, (0, 0), sigma)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0).astype(np.float32)


def _locate(area: np.ndarray, tmpl: np.ndarray, m: int) -> tuple[float, float, float, bool]:
    """Where ``tmpl`` ``(n, n)`` lies in ``area`` ``(n + 2m, n + 2m)`` relative to its centre
    position: ``(dx, dy, peak NCC, peak on the search margin)`` (OpenCV ``matchTemplate``,
    ``TM_CCOEFF_NORMED``; sub-pixel by :func:`_subpixel_iterative`, ``0, 0`` offsets on the
    margin)."""
    import cv2

    surface = cv2.matchTemplate(area, tmpl, cv2.TM_CCOEFF_NORMED)  # (2m+1, 2m+1)
    surface = np.nan_to_num(surface, nan=-1.0)
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    ncc = float(surface[iy, ix])
    on_margin = bool(iy in (0, 2 * m) or ix in (0, 2 * m))
    if on_margin:
        ox, oy = 0.0, 0.0
    else:
        ox, oy = _subpixel_iterative(area, tmpl, surface, int(iy), int(ix))
    return float(ix + ox - m), float(iy + oy - m), ncc, on_margin


def verify_registration(
    img_ref: np.ndarray,
    mask_ref: np.ndarray | None,
    img_mov: np.ndarray,
    mask_mov: np.ndarray | None,
    matrix: np.ndarray,
    config: VerifyConfig | None = None,
    scale: float = 1.0,
    inverse=None,
) -> Verification:
    """Check an estimated transform on the image content, independently of the keypoints.

    Args:
        img_ref: ``(H, W)`` float32 preprocessed reference (values about [0, 1]).
        mask_ref: ``(H, W)`` bool valid reference pixels, or ``None`` (all valid).
        img_mov: ``(h, w)`` float32 preprocessed moving image, same preprocessing.
        mask_mov: ``(h, w)`` bool valid moving pixels, or ``None``.
        matrix: 3x3, moving pixel centre -> reference pixel centre, at the resolution of
            these arrays.
        config: :class:`VerifyConfig`.
        scale: full-resolution reference pixels per pixel of ``img_ref`` (for the report).
        inverse: for a non-linear mapping, a function reference px ``(N, 2)`` -> moving px
            ``(N, 2)`` at these arrays' resolution; the moving image is then resampled
            through it (OpenCV ``remap``) instead of ``matrix``.

    Returns:
        :class:`Verification`.
    """

    cfg = config or VerifyConfig()
    shape = img_ref.shape[:2]
    img_mov, mask_mov, matrix, inverse = _shrink_finer_moving(img_mov, mask_mov, matrix, inverse)
    if inverse is None:
        warped, wvalid = warp_to_reference(img_mov, mask_mov, matrix, shape)
    else:
        warped, wvalid = _remap_to_reference(img_mov, mask_mov, inverse, shape)
    rvalid = np.ones(shape, bool) if mask_ref is None else np.asarray(mask_ref, bool)
    ref = np.ascontiguousarray(img_ref, dtype=np.float32)
    m = int(cfg.margin)
    h, w = shape
    both = rvalid & wvalid
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    if not len(rows):
        return Verification(Verdict.INCONCLUSIVE, 0, 0, np.nan, np.nan, np.nan, scale)
    # the grid covers the overlap's bounding box (a small overlap: smaller, fewer windows)
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    win = _window_size((box[1] - box[0], box[3] - box[2]), cfg)
    if h < win + 2 * m or w < win + 2 * m:
        return Verification(Verdict.INCONCLUSIVE, 0, 0, np.nan, np.nan, np.nan, scale)
    smooth_ref = smooth_mov = None
    if cfg.verdict_sigma > 0:
        smooth_ref = _smooth(ref, rvalid, cfg.verdict_sigma)
        smooth_mov = _smooth(warped, wvalid, cfg.verdict_sigma)
    ys = _grid_origins(box[0], box[1], h, win, m, cfg.grid)
    xs = _grid_origins(box[2], box[3], w, win, m, cfg.grid)
    records: list[dict] = []
    for y0 in ys:
        for x0 in xs:
            ty, tx = y0 + m, x0 + m  # template (warped moving) origin
            tv = both[ty : ty + win, tx : tx + win]
            if tv.mean() < MIN_VALID:
                continue
            sv = rvalid[y0 : y0 + win + 2 * m, x0 : x0 + win + 2 * m]
            if sv.mean() < MIN_VALID:
                continue
            tmpl = warped[ty : ty + win, tx : tx + win].copy()
            area = ref[y0 : y0 + win + 2 * m, x0 : x0 + win + 2 * m].copy()
            # invalid pixels take the window's valid mean (no edge at the nodata border)
            tmpl[~tv] = float(tmpl[tv].mean())
            area[~sv] = float(area[sv].mean())
            if tmpl[tv].std() < MIN_STD or area[sv].std() < MIN_STD:
                continue
            dx, dy, ncc, on_margin = _locate(area, tmpl, m)
            r = max(float(np.hypot(dx, dy)), float(m)) if on_margin else float(np.hypot(dx, dy))
            clear = bool(not on_margin and ncc >= cfg.min_ncc)
            rec = {
                "x": float(tx + (win - 1) / 2.0),
                "y": float(ty + (win - 1) / 2.0),
                "dx": float(dx),
                "dy": float(dy),
                "residual_px": r,
                "ncc": ncc,
                "clear": clear,
            }
            if smooth_ref is not None:  # the verdict on the smoothed windows
                sa = smooth_ref[y0 : y0 + win + 2 * m, x0 : x0 + win + 2 * m].copy()
                st = smooth_mov[ty : ty + win, tx : tx + win].copy()
                st[~tv] = float(st[tv].mean())
                sa[~sv] = float(sa[sv].mean())
                vdx, vdy, vncc, v_margin = _locate(sa, st, m)
                vr = float(np.hypot(vdx, vdy))
                vr = max(vr, float(m)) if v_margin else vr
                vclear = bool(not v_margin and vncc >= cfg.verdict_min_ncc)
                rec.update(vdx=float(vdx), vdy=float(vdy), vncc=vncc, vclear=vclear,
                           verdict_residual_px=vr)  # fmt: skip
                # agrees on either peak (the unsmoothed one where it is clear: finer)
                rec["agree"] = bool(
                    (clear and r <= cfg.tolerance) or (vclear and vr <= cfg.tolerance)
                )
            else:
                rec["agree"] = bool(clear and r <= cfg.tolerance)
            records.append(rec)
    n = len(records)
    # per window the residual of its finer clear peak (unsmoothed where clear, else smoothed)
    res = np.array(
        [rec["residual_px"] if rec["clear"] else rec.get("verdict_residual_px", rec["residual_px"])
         for rec in records], float,
    )  # fmt: skip
    agree = np.array([rec["agree"] for rec in records], bool)
    k = int(agree.sum())
    med = float(np.median(res)) if n else np.nan
    p90 = float(np.percentile(res, 90)) if n else np.nan
    amed = float(np.median(res[agree])) if k else np.nan
    if n < cfg.min_windows:
        verdict = Verdict.INCONCLUSIVE
    elif k >= max(3, cfg.min_agree * n):
        verdict = Verdict.PASS
    else:
        verdict = Verdict.FAIL
    return Verification(verdict, n, k, med, p90, amed, scale, records)


def _work_to_full(r) -> np.ndarray:
    """3x3 work pixel centre -> full-resolution pixel centre of a ``sarreg.io.Raster`` read."""
    d = float(r.decimation)
    ox, oy = r.window_offset
    return np.array([[d, 0.0, 0.5 * d - 0.5 + ox], [0.0, d, 0.5 * d - 0.5 + oy], [0, 0, 1.0]])


def work_matrix(ref_raster, mov_raster, matrix_full: np.ndarray) -> np.ndarray:
    """``matrix_full`` (full-resolution moving -> reference pixel centres) at the resolution
    and window of two ``sarreg.io.Raster`` reads (their ``decimation``, ``window_offset``)."""
    return np.linalg.inv(_work_to_full(ref_raster)) @ matrix_full @ _work_to_full(mov_raster)


#: a misalignment that the check's windows measure beyond this (full-resolution reference px,
#: RMS at the moving image's corners and centre) is corrected by :func:`correct_by_windows`
CORRECT_MIN_PX = 0.5
#: windows needed to fit a correction (fewer: translation only below
#: :data:`CORRECTION_AFFINE_MIN`)
CORRECTION_MIN_WINDOWS = 4
CORRECTION_AFFINE_MIN = 8
#: a fit that failed its check is corrected when this share of the windows tried are clear
FAILED_CLEAR_SHARE = 0.5


#: the unsmoothed windows' residual shifts are used (:func:`residual_shifts`) when at least
#: this share of the windows tried have a clear unsmoothed peak; otherwise the smoothed ones
RAW_CLEAR_SHARE = 0.5


def residual_shifts(verification: Verification) -> tuple[np.ndarray, np.ndarray, str]:
    """The residual shifts the check measured, for a correction or an error estimate.

    The unsmoothed correlation's peaks are the finer ones; on single-look speckle few of them
    are clear, and the peaks of the smoothed correlation (``vdx, vdy``, the verdict's) are
    used instead, when fewer than :data:`RAW_CLEAR_SHARE` of the windows tried have a clear
    unsmoothed peak. Returns ``(xy (K, 2) window centres, d (K, 2) residual shifts, which)``
    in checked reference pixels, ``which`` = 'unsmoothed' | 'smoothed'; ``K`` may be 0.
    """
    wins = verification.windows
    raw = [w for w in wins if w.get("clear")]
    which = "unsmoothed"
    if wins and len(raw) < RAW_CLEAR_SHARE * len(wins) and any("vdx" in w for w in wins):
        raw = [w for w in wins if w.get("vclear")]
        which = "smoothed"
    kx, ky = ("dx", "dy") if which == "unsmoothed" else ("vdx", "vdy")
    xy = np.array([[w["x"], w["y"]] for w in raw], np.float64).reshape(-1, 2)
    d = np.array([[w[kx], w[ky]] for w in raw], np.float64).reshape(-1, 2)
    return xy, d, which


def window_correction(verification: Verification, model: str) -> np.ndarray | None:
    """The correction that the residual shifts of the check's windows call for: a 3x3 ``C``
    in checked reference pixels with ``C x ~ x + (dx, dy)`` at the clear windows' centres
    ``x`` (:func:`residual_shifts`), robust (OpenCV least median of squares), in the family
    of ``model`` (translation; similarity; affine for 'affine' and 'homography'); translation
    only with fewer than :data:`CORRECTION_AFFINE_MIN` windows. ``None`` with fewer than
    :data:`CORRECTION_MIN_WINDOWS` clear windows."""
    import cv2

    src, d, _ = residual_shifts(verification)
    if len(src) < CORRECTION_MIN_WINDOWS:
        return None
    c = np.eye(3)
    if model == "translation" or len(src) < CORRECTION_AFFINE_MIN:
        c[:2, 2] = np.median(d, axis=0)
        return c
    dst = src + d
    if model == "similarity":
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    else:
        m, _ = cv2.estimateAffine2D(src, dst, method=cv2.LMEDS)
    if m is None:
        return None
    c[:2] = m
    return c


def _field_rms(correction: np.ndarray, pts: np.ndarray) -> float:
    """RMS length of ``correction(p) - p`` over ``pts`` ``(K, 2)``."""
    from sarreg.geometry import apply_matrix

    return float(np.sqrt(((apply_matrix(correction, pts) - pts) ** 2).sum(axis=1).mean()))


@dataclass
class Correction:
    """What :func:`correct_by_windows` did: the misalignment measured before and after (RMS
    at the moving image's corners and centre, full-resolution reference px) and whether the
    corrected transform was kept."""

    before_px: float
    after_px: float | None = None
    applied: bool = False

    def to_dict(self) -> dict:
        return {"before_px": _r(self.before_px), "after_px": _r(self.after_px or np.nan),
                "applied": self.applied}  # fmt: skip


def correct_by_windows(
    ref_raster, mov_raster, img_ref: np.ndarray, img_mov: np.ndarray, fit, tie,
    verification: Verification, mov_shape: tuple[int, int], rounds: int = 2,
):  # fmt: skip
    """Correct a linear fit by the residual shifts its check measured.

    The check's windows locate the moving content in the reference independently of the tie
    points; when they agree on a misalignment larger than :data:`CORRECT_MIN_PX` over the
    moving image (e.g. tie points biased by speckle or change), the fit's matrix is composed
    with :func:`window_correction` (``M' = C M``, in full-resolution pixels) and checked
    again; the corrected fit is kept when its check passes and measures less misalignment.
    A fit that failed its check is corrected too when at least :data:`FAILED_CLEAR_SHARE` of
    the windows tried (and :data:`CORRECTION_AFFINE_MIN`) have a clear peak: a fit a few
    pixels off, whose windows disagree with it consistently; it is kept only when the
    corrected fit passes.

    Args:
        ref_raster, mov_raster, img_ref, img_mov: as :func:`verify_fit`.
        fit: ``sarreg.geometry.TransformFit`` (full-resolution pixels); a non-linear one
            (``mapping``) or one whose check was inconclusive is returned unchanged.
        tie: ``sarreg.estimate.TiePoints`` of the fit (its residuals are recomputed).
        verification: :class:`Verification` of ``fit``.
        mov_shape: ``(H, W)`` of the full-resolution moving image.

    Returns:
        ``(fit, verification, Correction or None)``: the corrected pair, or the given one.
    """
    from dataclasses import replace

    from sarreg import geometry

    if fit.mapping is not None or verification.verdict is Verdict.INCONCLUSIVE:
        return fit, verification, None
    if verification.verdict is Verdict.FAIL and (
        len(residual_shifts(verification)[0])
        < max(CORRECTION_AFFINE_MIN, FAILED_CLEAR_SHARE * verification.windows_tried)
    ):  # fmt: skip
        return fit, verification, None
    h, w = mov_shape
    corners = np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0],
                        [(w - 1) / 2.0, (h - 1) / 2.0]])  # fmt: skip
    to_full = _work_to_full(ref_raster)
    model = fit.model if fit.model in geometry.MODELS else "affine"

    def measured(v: Verification, matrix: np.ndarray) -> tuple[float, np.ndarray | None]:
        c = window_correction(v, model)
        if c is None:
            return np.nan, None
        c_full = to_full @ c @ np.linalg.inv(to_full)
        return _field_rms(c_full, geometry.apply_matrix(matrix, corners)), c_full

    before, c_full = measured(verification, fit.matrix)
    record = Correction(before)
    if c_full is None or not before > CORRECT_MIN_PX:
        return fit, verification, record
    best_fit, best_ver, best = fit, verification, before
    for _ in range(rounds):
        matrix = c_full @ best_fit.matrix
        ver = verify_fit(ref_raster, mov_raster, img_ref, img_mov, matrix)
        after, c_next = measured(ver, matrix)
        if ver.verdict is not Verdict.PASS or not after < best:
            break
        res = geometry.residuals(matrix, tie.xy_mov, tie.xy_ref)
        inl = np.asarray(fit.inliers, bool)
        rmse = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("nan")
        best_fit = replace(fit, matrix=matrix, residuals=res, rmse=rmse)
        best_ver, best = ver, after
        record.applied, record.after_px = True, after
        if c_next is None or not after > CORRECT_MIN_PX:
            break
        c_full = c_next
    return best_fit, best_ver, record


def verify_fit(
    ref_raster, mov_raster, img_ref: np.ndarray, img_mov: np.ndarray, matrix_full: np.ndarray,
    config: VerifyConfig | None = None, mapping=None,
) -> Verification:  # fmt: skip
    """:func:`verify_registration` of a full-resolution transform on the work-resolution
    reads ``ref_raster``/``mov_raster`` (``sarreg.io.Raster``: their valid masks) and their
    preprocessed arrays ``img_ref``/``img_mov``. Window positions and residuals are in work
    pixels; :meth:`Verification.to_dict` also gives them in full-resolution reference pixels.
    ``mapping``: a non-linear :class:`sarreg.mapping.Mapping` (its ``inverse`` is used)."""
    m = work_matrix(ref_raster, mov_raster, matrix_full)
    inverse = None
    if mapping is not None:

        def inverse(xy_ref_work: np.ndarray) -> np.ndarray:
            full = mapping.inverse(ref_raster.to_full_res(xy_ref_work))
            return mov_raster.from_full_res(full)

    return verify_registration(
        img_ref, _checkable(ref_raster.mask), img_mov, _checkable(mov_raster.mask), m, config,
        scale=float(ref_raster.decimation), inverse=inverse,
    )  # fmt: skip


def _checkable(mask: np.ndarray) -> np.ndarray:
    """Pixels the check may use, ``(H, W)`` bool: the valid ones plus the small holes
    (scattered NaN/inf or nodata pixels) that :func:`sarreg.preprocess.preprocess` filled from
    their neighbours, so that scattered invalid pixels do not empty every window."""
    from sarreg.preprocess import PreprocessConfig, small_holes

    mask = np.asarray(mask, dtype=bool)
    return mask | small_holes(mask, int(PreprocessConfig().mask_margin))


def refuse_unless_passed(verification: Verification, enabled: bool = True) -> None:
    """Raise :class:`~sarreg.errors.VerificationError` (exit 7) when ``verification`` did not
    pass and the check is ``enabled`` (``--no-verify`` turns it off)."""
    from sarreg.errors import VerificationError

    if not enabled or verification.verdict is Verdict.PASS:
        return
    v = verification
    what = (
        f"only {v.windows_agree} of {v.windows_tried} image windows line up under the "
        f"estimated transform (median residual {v.median_px * v.scale:.1f} px)"
        if v.verdict is Verdict.FAIL
        else f"too few textured windows ({v.windows_tried}) in the overlap to check the result"
    )
    raise VerificationError(
        f"the registration failed its independent check: {what}",
        "try another --transform (e.g. similarity), --allow-reflection for mirrored images, "
        "other bands (--band-ref/--band-mov), or --no-verify to accept it unchecked",
    )
