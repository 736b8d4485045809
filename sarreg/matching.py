"""Mutual nearest-neighbour matching of unit-norm descriptors, optionally guided by a prior.

The similarity of two descriptors is their cosine similarity (dot product of unit vectors);
the matching distance used by the ratio test is the Euclidean one, ``sqrt(2 - 2 s)``.

Similarities are computed block by block (``chunk x chunk`` at a time, with torch on the CPU)
while running best / second-best values are kept per row and per column, so memory stays at
``O(chunk^2 + N + M)`` also for 50k x 50k keypoints. With a prior (a callable mapping moving
pixel centres to predicted reference pixel centres) and a radius, pairs whose reference
keypoint lies farther than ``radius`` reference pixels from the prediction are excluded before
both nearest-neighbour searches, so mutuality and the ratio test are evaluated under the same
constraint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sarreg.config import MatchConfig  # defined with the other settings (torch-free)

log = logging.getLogger(__name__)

_NEG = float("-inf")


@dataclass
class Matches:
    """Matched keypoint pairs, sorted by decreasing similarity.

    Attributes:
        idx_ref: ``(K,)`` int64 indices into the reference Features.
        idx_mov: ``(K,)`` int64 indices into the moving Features.
        similarity: ``(K,)`` float32 cosine similarity of the pair.
    """

    idx_ref: np.ndarray
    idx_mov: np.ndarray
    similarity: np.ndarray

    def __len__(self) -> int:
        return int(self.idx_ref.shape[0])

    def subset(self, idx) -> Matches:
        """Matches selected by an index array or boolean mask."""
        return Matches(self.idx_ref[idx], self.idx_mov[idx], self.similarity[idx])

    @classmethod
    def empty(cls) -> Matches:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


@dataclass
class _Best2:
    """Running best and second-best similarity (and best index) along one axis."""

    best: torch.Tensor  # (n,) float32
    second: torch.Tensor  # (n,) float32
    arg: torch.Tensor  # (n,) int64

    @classmethod
    def new(cls, n: int) -> _Best2:
        return cls(
            torch.full((n,), _NEG), torch.full((n,), _NEG), torch.full((n,), -1, dtype=torch.long)
        )

    def update(self, lo: int, hi: int, sim: torch.Tensor, offset: int) -> None:
        """Merge a block ``sim`` ``(hi - lo, m)`` whose columns start at index ``offset``.

        Ties go to the lower index (earlier blocks first, ``torch.max`` returns the first).
        """
        k = min(2, sim.shape[1])
        top = torch.topk(sim, k, dim=1).values  # sorted descending
        b_val, b_arg = sim.max(dim=1)  # first index among equal maxima
        blk_second = top[:, 1] if k == 2 else torch.full_like(b_val, _NEG)
        old_best, old_second = self.best[lo:hi], self.second[lo:hi]
        better = b_val > old_best
        new_second = torch.where(
            better, torch.maximum(old_best, blk_second), torch.maximum(old_second, b_val)
        )
        self.best[lo:hi] = torch.where(better, b_val, old_best)
        self.arg[lo:hi] = torch.where(better, b_arg + offset, self.arg[lo:hi])
        self.second[lo:hi] = new_second


@dataclass
class _TopK:
    """Running ``k`` best similarities (and their indices) along one axis."""

    val: torch.Tensor  # (n, k) float32, -inf where unset
    arg: torch.Tensor  # (n, k) int64, -1 where unset

    @classmethod
    def new(cls, n: int, k: int) -> _TopK:
        return cls(torch.full((n, k), _NEG), torch.full((n, k), -1, dtype=torch.long))

    def update(self, lo: int, hi: int, sim: torch.Tensor, offset: int) -> None:
        """Merge a block ``sim`` ``(hi - lo, m)`` whose columns start at index ``offset``."""
        idx = torch.arange(offset, offset + sim.shape[1]).expand(sim.shape[0], -1)
        vals = torch.cat([self.val[lo:hi], sim], dim=1)
        args = torch.cat([self.arg[lo:hi], idx], dim=1)
        top = torch.topk(vals, self.val.shape[1], dim=1)
        self.val[lo:hi] = top.values
        self.arg[lo:hi] = torch.gather(args, 1, top.indices)


def _as_descriptors(d, name: str) -> torch.Tensor:
    arr = np.ascontiguousarray(np.asarray(d, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {arr.shape}")
    return torch.from_numpy(arr)


def _far_apart(y_a: torch.Tensor, y_b: torch.Tensor, radius: float) -> bool:
    """True when no point of ``y_a`` is within ``radius`` of a point of ``y_b`` along y."""
    finite = y_a[torch.isfinite(y_a)]
    if finite.numel() == 0:
        return True
    return bool(y_b.min() > finite.max() + radius or y_b.max() < finite.min() - radius)


def _distance(sim: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between unit vectors of cosine similarity ``sim``."""
    return torch.sqrt(torch.clamp(2.0 - 2.0 * sim, min=0.0))


def match_mutual(
    desc_ref,
    desc_mov,
    config: MatchConfig | None = None,
    xy_ref=None,
    xy_mov=None,
    prior: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Matches:
    """Mutual nearest neighbours between two descriptor sets.

    Args:
        desc_ref: ``(N, D)`` unit-norm reference descriptors, or reference ``Features`` (then
            ``xy_ref`` defaults to its keypoints).
        desc_mov: ``(M, D)`` unit-norm moving descriptors, or moving ``Features``.
        config: :class:`MatchConfig`.
        xy_ref: ``(N, 2)`` reference keypoints (pixel centres); needed with a prior.
        xy_mov: ``(M, 2)`` moving keypoints (pixel centres); needed with a prior.
        prior: callable ``(M, 2)`` moving px -> ``(M, 2)`` predicted reference px. Used only
            when ``config.radius`` is set.

    Returns:
        :class:`Matches`, sorted by decreasing similarity (ties by reference index).
    """
    config = config or MatchConfig()
    local = None
    if hasattr(desc_ref, "descriptors"):
        xy_ref = desc_ref.keypoints if xy_ref is None else xy_ref
        desc_ref = desc_ref.descriptors
    if hasattr(desc_mov, "descriptors"):
        xy_mov = desc_mov.keypoints if xy_mov is None else xy_mov
        if config.local_radius and getattr(desc_mov, "local_descriptors", None) is not None:
            # gathered per chunk in _local_mutual (rows in the guided order, offsets within
            # local_radius): no copy of the whole (M, K, d) block
            local = _LocalRows(
                desc_mov.local_descriptors, _local_near(desc_mov, config.local_radius)
            )
        desc_mov = desc_mov.descriptors
    dr = _as_descriptors(desc_ref, "desc_ref")
    dm = _as_descriptors(desc_mov, "desc_mov")
    n, m = dr.shape[0], dm.shape[0]
    if n and m and dr.shape[1] != dm.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {dr.shape[1]} vs {dm.shape[1]}")
    if n == 0 or m == 0:
        return Matches.empty()

    guided = prior is not None and config.radius is not None
    perm_ref = perm_mov = None
    if guided:
        if xy_ref is None or xy_mov is None:
            raise ValueError("a prior needs xy_ref and xy_mov")
        p_ref = np.asarray(xy_ref, dtype=np.float64)[:, :2]
        pred = np.asarray(prior(np.asarray(xy_mov, dtype=np.float64)[:, :2]), dtype=np.float64)
        if pred.shape != (m, 2):
            raise ValueError(f"prior returned shape {pred.shape}, expected ({m}, 2)")
        # sort both sides by y so that blocks farther apart than the radius can be skipped
        perm_ref = np.argsort(p_ref[:, 1], kind="stable")
        perm_mov = np.argsort(np.nan_to_num(pred[:, 1], nan=np.inf), kind="stable")
        dr, dm = dr[torch.from_numpy(perm_ref)], dm[torch.from_numpy(perm_mov)]
        if local is not None:
            local.order = perm_mov
        p_ref = torch.from_numpy(np.ascontiguousarray(p_ref[perm_ref]))
        p_pred = torch.from_numpy(np.ascontiguousarray(pred[perm_mov]))
        radius = float(config.radius)

    if local is None:
        rows = _Best2.new(m)  # per moving keypoint: best reference
        cols = _Best2.new(n)  # per reference keypoint: best moving
    else:  # candidates by the keypoints' own descriptors, scored by the local ones below
        rows = _TopK.new(m, min(config.candidates, n))
        cols = None
    c = config.chunk
    with torch.inference_mode():
        for i0 in range(0, m, c):
            i1 = min(m, i0 + c)
            for j0 in range(0, n, c):
                j1 = min(n, j0 + c)
                if guided and _far_apart(p_pred[i0:i1, 1], p_ref[j0:j1, 1], radius):
                    continue
                sim = dm[i0:i1] @ dr[j0:j1].T  # (mi, nj)
                if guided:
                    near = torch.cdist(p_pred[i0:i1], p_ref[j0:j1]) <= radius  # False for NaN
                    sim = sim.masked_fill(~near, _NEG)
                rows.update(i0, i1, sim, j0)
                if cols is not None:
                    cols.update(j0, j1, sim.T, i0)

        if local is not None:
            ref_np, mov_np, sim_np = _local_mutual(rows, dr, dm, local, config)
            if guided:  # back to the callers' order
                ref_np, mov_np = perm_ref[ref_np], perm_mov[mov_np]
            order = np.lexsort((ref_np, -sim_np))
            log.debug("%d mutual matches of %d x %d keypoints (local descriptors, guided=%s)",
                      len(order), n, m, guided)  # fmt: skip
            return Matches(ref_np[order], mov_np[order], sim_np[order])
        idx_mov = torch.arange(m)
        idx_ref = rows.arg
        ok = idx_ref >= 0
        ok &= cols.arg[idx_ref.clamp(min=0)] == idx_mov
        ok &= torch.isfinite(rows.best) & (rows.best >= config.min_similarity)
        if config.ratio is not None:
            d1 = _distance(rows.best)
            ok &= d1 < config.ratio * _distance(rows.second)
            ok &= d1 < config.ratio * _distance(cols.second[idx_ref.clamp(min=0)])
        sel = torch.nonzero(ok).reshape(-1)
        sim_sel = rows.best[sel]
        ref_sel = idx_ref[sel]

    sim_np = sim_sel.numpy().astype(np.float32)
    ref_np = ref_sel.numpy().astype(np.int64)
    mov_np = sel.numpy().astype(np.int64)
    if guided:  # back to the callers' order
        ref_np, mov_np = perm_ref[ref_np], perm_mov[mov_np]
    order = np.lexsort((ref_np, -sim_np))
    log.debug("%d mutual matches of %d x %d keypoints (guided=%s)", len(order), n, m, guided)
    return Matches(ref_np[order], mov_np[order], sim_np[order])


def _local_near(feat, radius: int) -> np.ndarray:
    """Indices ``(K',)`` of ``feat.local_offsets`` within ``radius`` (Chebyshev)."""
    if feat.local_offsets is None:
        raise ValueError("Features with local_descriptors need local_offsets")
    return np.flatnonzero(np.abs(feat.local_offsets).max(axis=1) <= radius)


def _local_subset(feat, radius: int) -> np.ndarray:
    """``(M, K', D)`` float16 local descriptors of ``feat`` within ``radius`` (Chebyshev)."""
    return feat.local_descriptors[:, _local_near(feat, radius)]


@dataclass
class _LocalRows:
    """Local descriptors ``(M, K, d)`` float16 read as ``local[order][:, near]`` one block of
    rows at a time (``order``: the matcher's permutation of the moving keypoints, or None)."""

    local: np.ndarray
    near: np.ndarray
    order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.local.shape[0])

    @property
    def dim(self) -> int:
        return int(self.local.shape[2])

    def rows(self, i0: int, i1: int) -> np.ndarray:
        """``(i1 - i0, K', d)`` float16 of rows ``i0 .. i1 - 1`` (in the matcher's order)."""
        idx = np.arange(i0, min(i1, len(self))) if self.order is None else self.order[i0:i1]
        return self.local[np.ix_(idx, self.near)]


def _local_mutual(rows: _TopK, dr: torch.Tensor, dm: torch.Tensor, local: _LocalRows, config):
    """Mutual best pairs among each moving keypoint's candidates ``rows`` (its most similar
    references by their own descriptors), scored by the best similarity of the reference
    descriptor to the moving keypoint's local descriptors ``(M, K', d)``. When descriptors
    carry a context (``D > d``, see :class:`sarreg.features.Features`), the local descriptors
    share their keypoint's: they are scaled to the norm of the leading ``d`` entries of the
    moving descriptor ``dm`` and its context part is added. A pair is mutual
    when the moving keypoint is also the reference's best among the pairs it is part of.
    Applies the similarity floor and the ratio test (against the second best candidate) to
    those scores. Returns ``(idx_ref, idx_mov, similarity)`` numpy arrays (unsorted)."""
    n, m = dr.shape[0], len(local)
    c = rows.val.shape[1]
    d = local.dim
    if d > dr.shape[1]:
        raise ValueError(f"local descriptors ({d}) are longer than the descriptors ({dr.shape[1]})")
    sim = torch.full((m, c), _NEG)
    for i0 in range(0, m, 1024):
        loc = torch.from_numpy(local.rows(i0, i0 + 1024)).float()  # (b, K', d)
        arg = rows.arg[i0 : i0 + 1024]
        cand = dr[arg.clamp(min=0)]  # (b, c, D)
        s = torch.einsum("bkd,bcd->bck", loc, cand[..., :d]).amax(dim=2)
        if dr.shape[1] > d:  # context: shared by the local descriptors of a keypoint
            own = dm[i0 : i0 + 1024]
            s = s * own[:, :d].norm(dim=1, keepdim=True)
            s = s + torch.einsum("bd,bcd->bc", own[:, d:], cand[..., d:])
        sim[i0 : i0 + 1024] = s.masked_fill(~torch.isfinite(rows.val[i0 : i0 + 1024]), _NEG)
    flat = sim.reshape(-1)
    ref_of = rows.arg.reshape(-1)
    mov_of = torch.arange(m).repeat_interleave(c)
    ok = torch.isfinite(flat)
    flat, ref_of, mov_of = flat[ok], ref_of[ok], mov_of[ok]
    empty = np.zeros(0, np.int64)
    if flat.numel() == 0:
        return empty, empty, np.zeros(0, np.float32)
    # best and second best per moving keypoint (over its candidates) and per reference
    top2 = torch.topk(sim, min(2, c), dim=1).values
    second_mov = top2[:, 1] if c > 1 else torch.full((m,), _NEG)
    best_of_mov = sim.argmax(dim=1)  # candidate slot
    best_ref_val = torch.full((n,), _NEG).scatter_reduce(0, ref_of, flat, "amax")
    mov_ids = torch.arange(m)
    pair_ref = rows.arg[mov_ids, best_of_mov]
    pair_sim = sim[mov_ids, best_of_mov]
    valid = torch.isfinite(pair_sim) & (pair_ref >= 0)
    # mutual: the pair is also its reference's best (ties: the lowest moving index)
    is_best = flat == best_ref_val[ref_of]
    first_mov = torch.full((n,), m, dtype=torch.long).scatter_reduce(
        0, ref_of[is_best], mov_of[is_best], "amin"
    )
    valid &= first_mov[pair_ref.clamp(min=0)] == mov_ids
    valid &= pair_sim >= config.min_similarity
    if config.ratio is not None:
        # second best per reference: the best over its pairs other than the mutual one
        others = ~(is_best & (mov_of == first_mov[ref_of]))
        second_ref = torch.full((n,), _NEG).scatter_reduce(0, ref_of[others], flat[others], "amax")
        d1 = _distance(pair_sim)
        valid &= d1 < config.ratio * _distance(second_mov)
        valid &= d1 < config.ratio * _distance(second_ref[pair_ref.clamp(min=0)])
    sel = torch.nonzero(valid).reshape(-1)
    return (
        pair_ref[sel].numpy().astype(np.int64),
        sel.numpy().astype(np.int64),
        pair_sim[sel].numpy().astype(np.float32),
    )


def refine_keypoints(feat_ref, feat_mov, matches: Matches):
    """Move each matched moving keypoint to where its descriptor best matches the reference's.

    A descriptor matches its true correspondence within a few pixels (R2D2 trains it to
    match anywhere within ``sampler.pos_radius`` px), so two keypoints detected a few pixels
    apart on the same structure still match. For every match this picks, among the
    neighbourhood descriptors kept at extraction (``ExtractConfig.refine_radius``), the
    position whose descriptor is most similar to the reference keypoint's descriptor, refines
    it to sub-pixel precision by a parabola through the similarities of its neighbours along
    x and y, and moves the keypoint there. The matches themselves (which pairs, their order
    and similarity) are unchanged.

    Args:
        feat_ref, feat_mov: :class:`sarreg.features.Features` of the reference and moving
            images; the moving ones need ``local_descriptors``.
        matches: :class:`Matches` between them (mutual, so each keypoint is matched once).

    Returns:
        A copy of ``feat_mov`` with the matched keypoints moved (input pixel centres; at most
        ``(refine_radius + 0.5) * scale`` px along each axis, ``scale`` being the keypoint's
        ``Features.scales``), or ``feat_mov`` unchanged when it has no local descriptors or
        there are no matches.
    """
    target, other = feat_mov, feat_ref
    idx_t, idx_o = matches.idx_mov, matches.idx_ref
    if target.local_descriptors is None or target.local_offsets is None or len(matches) == 0:
        return target
    if len(np.unique(idx_t)) != len(idx_t):
        raise ValueError("refine_keypoints needs one-to-one matches (mutual nearest neighbours)")
    n_off = len(target.local_offsets)
    side = int(round(math.sqrt(n_off)))
    if side * side != n_off:
        raise ValueError("local_offsets must be a square grid (see features.local_offsets)")
    sims = np.empty((len(idx_t), n_off), np.float32)
    chunk = 1024
    with torch.inference_mode():
        for i0 in range(0, len(idx_t), chunk):
            local = torch.from_numpy(target.local_descriptors[idx_t[i0 : i0 + chunk]]).float()
            query = np.asarray(other.descriptors[idx_o[i0 : i0 + chunk]])
            query = torch.from_numpy(query[:, : local.shape[2]])  # without any context part
            sims[i0 : i0 + chunk] = torch.einsum("nkd,nd->nk", local, query.float()).numpy()
    best = sims.argmax(axis=1)
    step = target.local_offsets[best] + _subpixel(sims.reshape(-1, side, side), best, side)
    step = step * target.scales[idx_t, None]
    keypoints = target.keypoints.copy()
    h, w = target.image_shape
    moved = keypoints[idx_t] + step.astype(np.float32)
    if h and w:
        moved[:, 0] = np.clip(moved[:, 0], 0, w - 1)
        moved[:, 1] = np.clip(moved[:, 1], 0, h - 1)
    keypoints[idx_t] = moved
    log.debug("refined %d keypoints (median shift %.2f px)", len(idx_t),
              float(np.median(np.hypot(*step.T))) if len(step) else 0.0)  # fmt: skip
    return dataclasses.replace(target, keypoints=keypoints)


def matched_points(feat_ref, feat_mov, config: MatchConfig | None = None):
    """sarreg's matching of two Features as ``sarreg register`` does it without a prior:
    :func:`match_mutual` (on the moving local descriptors when present), then
    :func:`refine_keypoints`. Returns ``(matches, xy_ref (K, 2), xy_mov (K, 2))``, the
    positions float64 pixel centres (the moving ones refined)."""
    matches = match_mutual(feat_ref, feat_mov, config)
    refined = refine_keypoints(feat_ref, feat_mov, matches)
    xy_ref = np.asarray(feat_ref.keypoints, np.float64)[matches.idx_ref]
    return matches, xy_ref, np.asarray(refined.keypoints, np.float64)[matches.idx_mov]


def _subpixel(sim: np.ndarray, best: np.ndarray, side: int) -> np.ndarray:
    """Sub-pixel offsets ``(n, 2)`` (x, y) in ``[-0.5, 0.5]`` of the maxima ``best`` (flat
    indices) of ``(n, side, side)`` similarity grids: a parabola through the maximum and its
    two neighbours along each axis (0 at the grid's edge or where the curve is not peaked)."""
    n = len(best)
    by, bx = np.divmod(best, side)
    rows = np.arange(n)
    out = np.zeros((n, 2), np.float32)
    for axis, (pos, other) in enumerate(((bx, by), (by, bx))):
        inner = (pos > 0) & (pos < side - 1)
        lo = np.clip(pos - 1, 0, side - 1)
        hi = np.clip(pos + 1, 0, side - 1)
        if axis == 0:
            s_lo, s_0, s_hi = sim[rows, other, lo], sim[rows, other, pos], sim[rows, other, hi]
        else:
            s_lo, s_0, s_hi = sim[rows, lo, other], sim[rows, pos, other], sim[rows, hi, other]
        curv = s_lo - 2 * s_0 + s_hi
        ok = inner & (curv < 0)
        delta = np.zeros(n, np.float32)
        delta[ok] = 0.5 * (s_lo[ok] - s_hi[ok]) / curv[ok]
        out[:, axis] = np.clip(delta, -0.5, 0.5)
    return out
