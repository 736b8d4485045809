"""Orientation and scale search: register images that differ by a right-angle rotation, a
mirror flip or a large scale, which the keypoint descriptors do not tolerate.

A :class:`Hypothesis` resamples the moving image (rotation by a multiple of 90 deg, optional
left-right flip, scale) before keypoint extraction; the keypoints found on the resampled image
are mapped back to the moving image's own pixels, so the transform fitted afterwards already
contains the hypothesis (it is composed with the fit by construction).

:func:`run_search` tries the hypotheses one after the other through a caller's function that
extracts, matches, fits and verifies (:class:`Attempt`), stops at the first convincing one and
otherwise returns the best verified one. The common case stays cheap: the pipeline calls the
search only when the plain attempt is weak or fails verification (:func:`is_weak`).

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
ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class Hypothesis:
    """Resampling of the moving image before extraction.

    Attributes:
        rotation_deg: 0, 90, 180 or 270: the moving image is rotated by this angle,
            counter-clockwise on screen.
        flip: mirrored left-right first.
        scale: moving pixels per reference pixel to try (2: the moving image has twice the
            pixels per side of the reference for the same ground). To keep extraction cheap,
            nothing is enlarged: a scale below 1 shrinks the reference (:attr:`ref_shrink`),
            a scale above 1 the moving image (:meth:`apply`), so that both meet at the
            coarser pixel size.
    """

    rotation_deg: int = 0
    flip: bool = False
    scale: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.rotation_deg == 0 and not self.flip and self.scale == 1.0

    def describe(self) -> str:
        parts = [f"rotated {self.rotation_deg} deg"] if self.rotation_deg else []
        if self.flip:
            parts.insert(0, "mirrored")
        if self.scale != 1.0:
            parts.append(f"scaled x{self.scale:g}")
        return ", ".join(parts) or "as is"

    def to_dict(self) -> dict:
        return {
            "rotation_deg": int(self.rotation_deg),
            "flip": bool(self.flip),
            "scale": float(self.scale),
            "description": self.describe(),
        }

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
        a = math.radians(self.rotation_deg)
        c, s = round(math.cos(a)), round(math.sin(a))
        lin = np.array([[c, s], [-s, c]], float) @ np.diag([-1.0 if self.flip else 1.0, 1.0])
        g = np.eye(3)
        g[:2, :2] = lin / self.scale
        return g

    def matrix(self, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """``(H, out_shape)``: 3x3 moving pixel centre -> resampled pixel centre, and the
        ``(H, W)`` of the resampled image (which holds the whole moving image)."""
        h, w = shape
        a = math.radians(self.rotation_deg)
        c, s = round(math.cos(a)), round(math.sin(a))
        # counter-clockwise on screen with y down: (x, y) -> (x c + y s, -x s + y c)
        lin = np.array([[c, s], [-s, c]], float) @ np.diag([-1.0 if self.flip else 1.0, 1.0])
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
        neighbour."""
        import cv2

        img = np.ascontiguousarray(image, np.float32)
        msk = np.asarray(mask, bool)
        if self.is_identity and upsample == 1.0:
            return img, msk, np.eye(3)
        img, msk, s_mat = resize(img, msk, 1.0 / self.mov_shrink, cv2.INTER_AREA)
        if self.rotation_deg or self.flip:
            r_mat, (oh, ow) = Hypothesis(self.rotation_deg, self.flip).matrix(img.shape[:2])
            img = cv2.warpAffine(img, r_mat[:2], (ow, oh), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
            msk = cv2.warpAffine(msk.astype(np.uint8), r_mat[:2], (ow, oh),
                                 flags=cv2.INTER_NEAREST, borderValue=0) > 0  # fmt: skip
        else:
            r_mat = np.eye(3)
        img, msk, u_mat = resize(img, msk, upsample, cv2.INTER_LINEAR)
        return img, msk, u_mat @ r_mat @ s_mat


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


def hypotheses(
    flips: bool = True,
    scales: Iterable[float] = SCALES,
    size_ratio: float | None = None,
    flips_first: bool = False,
) -> list[Hypothesis]:
    """Hypotheses to search, most likely first (the identity excluded: it is tried before).

    Scales are ranked by closeness (in log) to ``size_ratio`` (moving side / reference side,
    a hint for plain images of unknown scale). Order: the right-angle rotations at the most
    likely scale; the other scales unrotated; the remaining rotation/scale combinations; then,
    with ``flips``, the mirrored image rotated at the likely scale and unrotated at the other
    scales (``flips_first``: right after the plain rotations, for when mirrored images are
    expected).
    """
    sc = list(scales)
    if size_ratio and size_ratio > 0:
        sc.sort(key=lambda s: (abs(math.log(s) - math.log(size_ratio)), abs(math.log(s))))

    def ordered(flip: bool) -> list[Hypothesis]:
        first = [Hypothesis(r, flip, float(sc[0])) for r in ROTATIONS]
        scaled = [Hypothesis(0, flip, float(s)) for s in sc[1:]]
        rest = [Hypothesis(r, flip, float(s)) for s in sc[1:] for r in ROTATIONS[1:]]
        return first + scaled + rest

    plain = [h for h in ordered(False) if not h.is_identity]
    if not flips:
        return plain
    mirrored = ordered(True)[: 4 + len(sc) - 1]  # rotations at the likely scale, other scales
    if flips_first:  # mirrored images expected: right after the plain rotations
        return plain[:3] + mirrored + plain[3:]
    return plain + mirrored


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
            return SearchResult(att, tried)
    best = max(tried, key=lambda a: a.score)
    return SearchResult(best, tried)
