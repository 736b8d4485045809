"""Orientation and scale search: register images that differ by any rotation, a mirror flip
or a large scale, which the keypoint descriptors do not tolerate.

The network keeps most of its matches up to about 20 deg of rotation and a factor of about
1.4 in scale (``scripts/rotation_tolerance.py``: true-inlier share 0.89 at 0 deg, 0.49 at
20 deg, 0.21 at 30 deg, 0.03 at 40 deg; 0.5-0.75 within 1/1.4..1.4x, 0.13 at 2x). The search
therefore tries rotations in steps of 45 deg (:data:`ROTATIONS`, at most 22.5 deg off) at
scales in steps of 2 (:data:`SCALES`), every combination of the two with and without a mirror
flip (the likely ones first, :func:`hypotheses`), then the same at the scales between
(:data:`FINE_SCALES`), and first the rotation and scale proposed by an
orientation-free estimate, the Fourier-Mellin transform (:func:`fourier_mellin`: log-polar
phase correlation of the images' Fourier magnitudes, which do not depend on the shift).

A :class:`Hypothesis` resamples the moving image (rotation, optional left-right flip, scale)
before keypoint extraction; the keypoints found on the resampled image
are mapped back to the moving image's own pixels, so the transform fitted afterwards already
contains the hypothesis (it is composed with the fit by construction).

:func:`run_search` tries the hypotheses one after the other through a caller's function that
extracts, matches, fits and verifies (:class:`Attempt`), stops at the first convincing one and
otherwise returns the best verified one. The common case stays cheap: the pipeline calls the
search only when the plain attempt is weak or fails verification (:func:`is_weak`). The
coarse pass (:func:`sarreg.coarse.fit_searched`) screens each hypothesis on one pyramid level
of the resampled moving image (:attr:`Attempt.screened`) and redoes the winner in full
(:func:`redo_in_full`).

Coordinates: ``(x, y)`` pixel centres, top-left pixel centre at ``(0, 0)``. A hypothesis
matrix ``H`` (3x3) maps moving pixel centres to pixel centres of the resampled image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: an attempt whose inlier share is below this is weak: the search runs
WEAK_INLIER_SHARE = 0.25
#: the search stops at the first hypothesis with at least this share of agreeing windows
#: (and an inlier share of at least WEAK_INLIER_SHARE)
CONVINCING_AGREE = 0.6
#: scales tried (moving image resampled by this factor before extraction)
SCALES = (1.0, 2.0, 0.5, 4.0, 0.25)
#: scales between the large ones of SCALES (a factor 2^0.5 from them), tried after the whole
#: grid of SCALES: at a large scale ratio 1.4 off the grid (e.g. a moving image at 1/2.7 of
#: the reference's pixel size) the network keeps too few matches on the coarse pixels, where
#: near scale 1 it tolerates 1.4x (not tried between 1 and 2: more time on every refusal, for
#: no pair of the benchmarks)
FINE_SCALES = (2.0**1.5, 2.0**-1.5)
#: rotations tried at the most likely scale (deg): the right angles first, then the diagonals
ROTATIONS = (0, 90, 180, 270, 45, 135, 225, 315)
#: rotations tried at the other scales
RIGHT_ANGLES = (0, 90, 180, 270)
#: a proposed scale this close to 1 (ratio) is tried at scale 1 (the network tolerates it)
SCALE_SNAP = 1.25


def rotation_matrix(rotation_deg: float) -> np.ndarray:
    """2x2 counter-clockwise rotation on screen with y down, ``(x, y) -> (x c + y s,
    -x s + y c)``; exact for multiples of 90 deg."""
    if float(rotation_deg) % 90.0 == 0.0:
        a = math.radians(rotation_deg)
        c, s = round(math.cos(a)), round(math.sin(a))
    else:
        a = math.radians(rotation_deg)
        c, s = math.cos(a), math.sin(a)
    return np.array([[c, s], [-s, c]], float)


@dataclass(frozen=True)
class Hypothesis:
    """Resampling of the moving image before extraction.

    Attributes:
        rotation_deg: the moving image is rotated by this angle (deg), counter-clockwise on
            screen; multiples of 90 deg are exact pixel copies, other angles bilinear.
        flip: mirrored left-right first.
        scale: moving pixels per reference pixel to try (2: the moving image has twice the
            pixels per side of the reference for the same ground). To keep extraction cheap,
            nothing is enlarged: a scale below 1 shrinks the reference (:attr:`ref_shrink`),
            a scale above 1 the moving image (:meth:`apply`), so that both meet at the
            coarser pixel size.
    """

    rotation_deg: float = 0
    flip: bool = False
    scale: float = 1.0
    source: str = "grid"

    @property
    def is_identity(self) -> bool:
        return self.rotation_deg == 0 and not self.flip and self.scale == 1.0

    def describe(self) -> str:
        parts = [f"rotated {self.rotation_deg:g} deg"] if self.rotation_deg else []
        if self.flip:
            parts.insert(0, "mirrored")
        if self.scale != 1.0:
            parts.append(f"scaled x{self.scale:.3g}")
        return ", ".join(parts) or "as is"

    def to_dict(self) -> dict:
        return {
            "rotation_deg": float(self.rotation_deg),
            "flip": bool(self.flip),
            "scale": float(self.scale),
            "description": self.describe(),
            "source": self.source,
        }

    @property
    def right_angle(self) -> bool:
        """The rotation is a multiple of 90 deg (an exact pixel copy)."""
        return float(self.rotation_deg) % 90.0 == 0.0

    def same(self, other: Hypothesis) -> bool:
        """Same resampling (whatever proposed it)."""
        return (
            (float(self.rotation_deg) - float(other.rotation_deg)) % 360.0 == 0.0
            and self.flip == other.flip
            and self.scale == other.scale
        )

    @property
    def ref_shrink(self) -> float:
        """Factor the reference is shrunk by for this hypothesis (1 = as is)."""
        return 1.0 / self.scale if self.scale < 1.0 else 1.0

    @property
    def mov_shrink(self) -> float:
        return self.scale if self.scale > 1.0 else 1.0

    def linear(self) -> np.ndarray:
        """3x3 linear map (no translation) of the hypothesis in full-resolution pixels:
        rotation and flip divided by :attr:`scale`. A transform fitted on ``G x_mov`` stays
        in its model family (a similarity cannot mirror); compose it as ``M_fit @ G``."""
        lin = rotation_matrix(self.rotation_deg) @ np.diag([-1.0 if self.flip else 1.0, 1.0])
        g = np.eye(3)
        g[:2, :2] = lin / self.scale
        return g

    def matrix(self, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """``(H, out_shape)``: 3x3 moving pixel centre -> resampled pixel centre, and the
        ``(H, W)`` of the resampled image (which holds the whole moving image)."""
        h, w = shape
        lin = rotation_matrix(self.rotation_deg) @ np.diag([-1.0 if self.flip else 1.0, 1.0])
        lin = lin / self.mov_shrink
        edges = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
        q = edges @ lin.T
        t = -0.5 - q.min(axis=0)
        ext = q.max(axis=0) - q.min(axis=0)
        out = (max(1, int(round(ext[1]))), max(1, int(round(ext[0]))))
        m = np.eye(3)
        m[:2, :2] = lin
        m[:2, 2] = t
        return m, out

    def apply(
        self, image: np.ndarray, mask: np.ndarray, upsample: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The resampled ``(image, mask, H)``: float32 image, bool mask and the 3x3 matrix
        moving pixel centre -> resampled pixel centre.

        Steps: shrunk by :attr:`mov_shrink` (area average, so that speckle is averaged as
        in a coarser acquisition), rotated / flipped (exact pixel copies), then enlarged by
        ``upsample`` (bilinear; see :func:`upsample_factor`). The mask follows by nearest
        neighbour. Angles other than multiples of 90 deg are bilinear; the corners they
        uncover are masked out (with a margin of :data:`ROTATION_MARGIN` px) and filled with the
        image's mean."""
        import cv2

        img = np.ascontiguousarray(image, np.float32)
        msk = np.asarray(mask, bool)
        if self.is_identity and upsample == 1.0:
            return img, msk, np.eye(3)
        img, msk, s_mat = resize(img, msk, 1.0 / self.mov_shrink, cv2.INTER_AREA)
        if self.rotation_deg and not self.right_angle:
            r_mat, (oh, ow) = Hypothesis(self.rotation_deg, self.flip).matrix(img.shape[:2])
            fill = float(img[msk].mean()) if msk.any() else 0.0
            img = cv2.warpAffine(img, r_mat[:2], (ow, oh), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=fill)  # fmt: skip
            msk = cv2.warpAffine(msk.astype(np.uint8), r_mat[:2], (ow, oh),
                                 flags=cv2.INTER_NEAREST, borderValue=0)  # fmt: skip
            k = 2 * ROTATION_MARGIN + 1
            msk = cv2.erode(msk, np.ones((k, k), np.uint8)) > 0
        elif self.rotation_deg or self.flip:
            r_mat, (oh, ow) = Hypothesis(self.rotation_deg, self.flip).matrix(img.shape[:2])
            img = cv2.warpAffine(img, r_mat[:2], (ow, oh), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
            msk = cv2.warpAffine(msk.astype(np.uint8), r_mat[:2], (ow, oh),
                                 flags=cv2.INTER_NEAREST, borderValue=0) > 0  # fmt: skip
        else:
            r_mat = np.eye(3)
        img, msk, u_mat = resize(img, msk, upsample, cv2.INTER_LINEAR)
        return img, msk, u_mat @ r_mat @ s_mat


#: keypoint-mask margin (px) along the edges a rotation by a non-right angle uncovers
ROTATION_MARGIN = 3


def resize(
    image: np.ndarray, mask: np.ndarray, factor: float, interpolation: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image`` ``(H, W)`` resized by ``factor`` (OpenCV ``interpolation``), its bool
    ``mask`` by nearest neighbour, and the 3x3 matrix old pixel centre -> new pixel centre
    (``x' = (x + 0.5) W' / W - 0.5`` per axis). ``factor == 1``: unchanged, identity."""
    import cv2

    if factor == 1.0:
        return image, mask, np.eye(3)
    h, w = image.shape[:2]
    size = (max(16, round(w * factor)), max(16, round(h * factor)))
    out = cv2.resize(image, size, interpolation=interpolation)
    msk = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    fx, fy = size[0] / w, size[1] / h
    m = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    return out, msk, m


#: a side (pixels) below which the images of a scale hypothesis are enlarged before extraction
MIN_EXTRACT_SIDE = 256
#: largest enlargement of a scale hypothesis' images
MAX_UPSAMPLE = 2.0


def upsample_factor(
    hyp: Hypothesis, shape_ref: tuple[int, int], shape_mov: tuple[int, int]
) -> float:
    """Enlargement applied to both images of ``hyp`` after the finer one is shrunk to the
    coarser one's pixel size: at a large scale ratio the shrunk image (whose side bounds the
    overlap) would be too small for the network's keypoints, so both meet at a finer pixel
    size instead (at most :data:`MAX_UPSAMPLE`). 1 for hypotheses at scale 1."""
    if hyp.scale == 1.0:
        return 1.0
    side = min(min(shape_ref) / hyp.ref_shrink, min(shape_mov) / hyp.mov_shrink)
    return float(np.clip(MIN_EXTRACT_SIDE / max(side, 1.0), 1.0, MAX_UPSAMPLE))


def size_ratio(shape_ref: tuple[int, ...], shape_mov: tuple[int, ...]) -> float:
    """Side of the moving image over the reference's, ``sqrt(pixels_mov / pixels_ref)`` of
    two ``(H, W)`` shapes: the scale hint of :func:`hypotheses` for plain images."""
    return math.sqrt(math.prod(shape_mov) / max(math.prod(shape_ref), 1))


def hypotheses(
    flips: bool = True,
    scales: Iterable[float] = SCALES,
    fine_scales: Iterable[float] = FINE_SCALES,
    size_ratio: float | None = None,
    flips_first: bool = False,
    proposals: Iterable[Hypothesis] = (),
) -> list[Hypothesis]:
    """Hypotheses to search, most likely first (the identity excluded: it is tried before).

    Scales are ranked by closeness (in log) to ``size_ratio`` (moving side / reference side,
    a hint for plain images of unknown scale). Order: the ``proposals`` (e.g. of
    :func:`fourier_mellin`; mirrored ones only with ``flips``); the rotations of
    :data:`ROTATIONS` at the most likely scale; the other scales unrotated; the right-angle
    rotations at the other scales; then, with ``flips``, the mirrored image rotated at the
    likely scale and unrotated at the other scales (``flips_first``: right after the plain
    right-angle rotations, for when mirrored images are expected); then the rest of the grid,
    every rotation of :data:`ROTATIONS` at every scale (both orientations with ``flips``), and
    last the same at the ``fine_scales`` between them (:data:`FINE_SCALES`):
    ``8 x 7 x 2 - 1`` = 111 hypotheses in all, 55 without flips. A hypothesis comes once.
    """
    sc, fine = list(scales), list(fine_scales)
    if size_ratio and size_ratio > 0:
        for lst in (sc, fine):
            lst.sort(key=lambda s: (abs(math.log(s) - math.log(size_ratio)), abs(math.log(s))))

    def ordered(flip: bool) -> list[Hypothesis]:
        first = [Hypothesis(r, flip, float(sc[0])) for r in ROTATIONS]
        scaled = [Hypothesis(0, flip, float(s)) for s in sc[1:]]
        rest = [Hypothesis(r, flip, float(s)) for s in sc[1:] for r in RIGHT_ANGLES[1:]]
        return first + scaled + rest

    plain = [h for h in ordered(False) if not h.is_identity]
    if flips:
        mirrored = ordered(True)[: len(ROTATIONS) + len(sc) - 1]
        if flips_first:  # mirrored images expected: right after the plain right angles
            n = len(RIGHT_ANGLES) - 1
            plain = plain[:n] + mirrored + plain[n:]
        else:
            plain = plain + mirrored
    # the rest of the grid: every rotation at every scale (for both orientations), then at
    # the scales between
    rest = [
        Hypothesis(r, f, float(s)) for s in sc + fine
        for f in ((False, True) if flips else (False,)) for r in ROTATIONS
    ]  # fmt: skip
    out: list[Hypothesis] = []
    for h in [p for p in proposals if flips or not p.flip] + plain + rest:
        if not h.is_identity and not any(h.same(o) for o in out):
            out.append(h)
    return out


#: side (px) of the square the images are brought to for :func:`fourier_mellin`
FM_SIZE = 256
#: a proposed rotation this close (deg) to a multiple of 90 deg is tried at that multiple
#: (an exact pixel copy; the network tolerates the rest)
ROTATION_SNAP = 10.0


@dataclass(frozen=True)
class Proposal:
    """Rotation and scale of the moving image relative to the reference estimated by
    :func:`fourier_mellin`, as the :class:`Hypothesis` that undoes them (``hypothesis``), with
    the phase-correlation peak ``response`` (0..1, higher = more confident)."""

    hypothesis: Hypothesis
    response: float


def _spectrum(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Fourier magnitude ``(size, size)`` (zero frequency at the centre) of ``image``
    ``(H, W)`` shrunk by ``f`` to fit ``size`` px, band-pass filtered (difference of Gaussians,
    against speckle and the mean), its invalid pixels zeroed and Hann-windowed, zero-padded;
    and ``f``."""
    import cv2
    from skimage.filters import difference_of_gaussians, window

    h, w = image.shape
    f = size / max(h, w)
    dims = (max(8, round(w * f)), max(8, round(h * f)))
    small = cv2.resize(np.asarray(image, np.float32), dims, interpolation=cv2.INTER_AREA)
    valid = cv2.resize(np.asarray(mask, np.uint8), dims, interpolation=cv2.INTER_NEAREST) > 0
    if valid.any():
        small = np.where(valid, small, small[valid].mean())
    band = difference_of_gaussians(small, 1.0, 8.0) * valid * window("hann", small.shape)
    pad = np.zeros((size, size))
    y0, x0 = (size - band.shape[0]) // 2, (size - band.shape[1]) // 2
    pad[y0 : y0 + band.shape[0], x0 : x0 + band.shape[1]] = band
    return np.abs(np.fft.fftshift(np.fft.fft2(pad))), f


def fourier_mellin(
    img_ref: np.ndarray,
    mask_ref: np.ndarray,
    img_mov: np.ndarray,
    mask_mov: np.ndarray,
    flips: bool = True,
    size: int = FM_SIZE,
) -> list[Proposal]:
    """Orientation-free first guess of the rotation and scale between the images.

    The Fourier magnitudes of both images (shift-free) are resampled on a log-polar grid,
    where a rotation and a scale become a shift, found by phase correlation
    (``cv2.phaseCorrelate``; rotation modulo 180 deg, as the magnitude is symmetric). With
    ``flips`` the mirrored moving image is tried too.

    Args:
        img_ref, mask_ref: reference image ``(H, W)`` in [0, 1] and its valid mask (bool).
        img_mov, mask_mov: moving image ``(H', W')`` and its valid mask.
        flips: also propose mirrored hypotheses.
        size: side of the square the images are brought to.

    Returns:
        :class:`Proposal` s, highest response first: for each orientation (as is, mirrored)
        the estimated rotation and the one 180 deg from it. Rotations within
        :data:`ROTATION_SNAP` of a right angle are snapped to it, scales within
        :data:`SCALE_SNAP` of 1 to 1.
    """
    import cv2
    from skimage.transform import warp_polar

    f_ref, k_ref = _spectrum(img_ref, mask_ref, size)
    radius = size // 2
    shape = (360, size)
    klog = shape[1] / math.log(radius)

    def polar(spec: np.ndarray) -> np.ndarray:
        p = warp_polar(spec, radius=radius, output_shape=shape, scaling="log", order=1)
        return np.ascontiguousarray(p[:180], np.float64)  # half: the magnitude is symmetric

    p_ref = polar(f_ref)
    out: list[Proposal] = []
    for flip in (False, True) if flips else (False,):
        mov = np.fliplr(img_mov) if flip else img_mov
        msk = np.fliplr(mask_mov) if flip else mask_mov
        f_mov, k_mov = _spectrum(mov, msk, size)
        (dx, dy), response = cv2.phaseCorrelate(p_ref, polar(f_mov))
        angle = dy * 360.0 / shape[0]
        # moving px per reference px: the log-radius shift, undone for the two resizes
        scale = k_ref / (k_mov * math.exp(dx / klog))
        if not (1.0 / SCALE_SNAP <= scale <= SCALE_SNAP):
            scale = float(np.clip(scale, min(SCALES), max(SCALES)))
        else:
            scale = 1.0
        for a in (angle, angle + 180.0):
            a = a % 360.0
            near = 90.0 * round(a / 90.0)
            a = near % 360.0 if abs(a - near) <= ROTATION_SNAP else round(a, 1)
            hyp = Hypothesis(a, flip, round(scale, 3), source="fourier-mellin")
            out.append(Proposal(hyp, float(response)))
    out.sort(key=lambda p: -p.response)
    return out


@dataclass
class Attempt:
    """One hypothesis tried: its fit and verification, or the error that stopped it.

    Attributes:
        hypothesis: :class:`Hypothesis`.
        use_prior: whether the georeferencing prior guided matching.
        stage: where it stopped when it failed: 'match' (too few matches) or 'fit'.
        final: its error ends the search (e.g. a verified fit outside the plausible scales).
        verification: :class:`sarreg.verify.Verification` or ``None`` (failed before).
        inlier_share: inliers / matches of the fit (0 when it failed).
        n_inliers: inliers of the fit.
        error: the :class:`~sarreg.errors.SarregError` that stopped it, or ``None``.
        payload: whatever the caller needs to go on with the winner (fit, matches, ...).
        screened: made with the cheaper extraction of a screened hypothesis (see
            :func:`sarreg.coarse.fit_searched`), not the full one.
    """

    hypothesis: Hypothesis
    use_prior: bool = False
    stage: str = ""
    final: bool = False
    verification: object | None = None
    inlier_share: float = 0.0
    n_inliers: int = 0
    error: Exception | None = None
    payload: object | None = field(default=None, repr=False)
    screened: bool = False

    @property
    def passed(self) -> bool:
        v = self.verification
        return v is not None and getattr(v.verdict, "value", v.verdict) == "pass"

    @property
    def score(self) -> tuple:
        """Ranking: verified first, then the share of agreeing windows, then inliers."""
        v = self.verification
        frac = v.agree_fraction if v is not None else 0.0
        return (self.passed, round(frac, 2), self.n_inliers)

    def summary(self) -> dict:
        v = self.verification
        return {
            **self.hypothesis.to_dict(),
            "georeferencing_prior": self.use_prior,
            "inliers": int(self.n_inliers),
            "inlier_share": round(float(self.inlier_share), 4),
            "verdict": None if v is None else getattr(v.verdict, "value", v.verdict),
            "windows_agree": None if v is None else int(v.windows_agree),
            "windows_tried": None if v is None else int(v.windows_tried),
            "error": None if self.error is None else str(self.error),
            "screened": bool(self.screened),
        }


def is_weak(attempt: Attempt) -> bool:
    """True when the attempt failed, did not pass verification or kept few inliers."""
    return not attempt.passed or attempt.inlier_share < WEAK_INLIER_SHARE


def is_convincing(attempt: Attempt) -> bool:
    v = attempt.verification
    return (
        attempt.passed
        and v.agree_fraction >= CONVINCING_AGREE
        and attempt.inlier_share >= WEAK_INLIER_SHARE
    )


@dataclass
class SearchResult:
    """The winning attempt (best verified, or the best failed one) and all tried."""

    best: Attempt
    tried: list[Attempt]

    def to_dict(self) -> dict:
        return {
            "hypothesis": self.best.hypothesis.to_dict(),
            "georeferencing_prior": self.best.use_prior,
            "searched": len(self.tried) > 1,
            "tried": [a.summary() for a in self.tried],
        }


def run_search(
    attempts: Iterable[tuple[Hypothesis, bool]],
    try_one: Callable[[Hypothesis, bool], Attempt],
    first: Attempt | None = None,
) -> SearchResult:
    """Try ``(hypothesis, use_prior)`` pairs in order until one is convincing.

    Args:
        attempts: the pairs to try (lazily consumed).
        try_one: runs one attempt; errors are caught by the caller and stored in
            :attr:`Attempt.error`.
        first: an attempt already made (the plain one), included in the ranking.

    Returns:
        :class:`SearchResult` whose ``best`` is the first convincing attempt, else the
        highest :attr:`Attempt.score`.
    """
    tried = [first] if first is not None else []
    for hyp, use_prior in attempts:
        att = try_one(hyp, use_prior)
        tried.append(att)
        log.info("search: %s%s -> %s", hyp.describe(), " (prior)" if use_prior else "",
                 att.summary()["verdict"] or att.error)  # fmt: skip
        if is_convincing(att) or att.final:
            _keep_payload_of(att, tried)
            return SearchResult(att, tried)
        _keep_payload_of(max(tried, key=lambda a: a.score), tried)
    best = max(tried, key=lambda a: a.score)
    return SearchResult(best, tried)


#: screened attempts (most inliers first) redone in full when no attempt passed verification
REDO_FAILED = 2


def redo_in_full(
    found: SearchResult,
    try_one: Callable[..., Attempt],
    corrects: Callable[[Attempt], bool],
) -> SearchResult:
    """``found`` with screened attempts (:attr:`Attempt.screened`) redone in full
    (``try_one(hypothesis, use_prior, full=True)``): the winner when it passed verification,
    else the :data:`REDO_FAILED` screened attempts with the most inliers (a fit whose screened
    keypoints fall short of the check). The first redone attempt that passes, or that
    ``corrects`` says passes once corrected by its windows (as
    :func:`sarreg.pipeline.check_result` then does), replaces its screened one and wins;
    when none does, ``found`` is returned as it is."""
    best = found.best
    if best.passed:
        candidates = [best] if best.screened else []
    else:
        screened = [a for a in found.tried if a.screened and a.n_inliers > 0]
        candidates = sorted(screened, key=lambda a: -a.n_inliers)[:REDO_FAILED]
    for cand in candidates:
        redo = try_one(cand.hypothesis, cand.use_prior, full=True)
        if redo.payload is not None and (redo.passed or (not best.passed and corrects(redo))):
            tried = [redo if a is cand else a for a in found.tried]
            _keep_payload_of(redo, tried)
            return SearchResult(redo, tried)
        log.info("search: %s redone in full did not pass", cand.hypothesis.describe())
    return found


def _keep_payload_of(best: Attempt, tried: list[Attempt]) -> None:
    """Release the payloads (features, matches) of every attempt in ``tried`` but ``best``:
    only the winner's are used, and a search of 40 hypotheses would otherwise hold 40 sets of
    moving features with their local descriptors (about 3 GB)."""
    for a in tried:
        if a is not best:
            a.payload = None
