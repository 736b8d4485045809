"""Multi-scale keypoint and descriptor extraction with an R2D2 network, in bounded memory.

For every pyramid scale ``s`` the ``[0, 1]`` image is resized to ``(round(H s), round(W s))``
and cut into overlapping tiles. Each tile runs through ``net.dense_maps`` (full-resolution
repeatability / reliability, low-resolution descriptor features); keypoints are the 3x3 local
maxima of the repeatability inside the tile's **core** (its share of the level without the
overlap), so that, with an overlap of at least the network's receptive-field radius, results do
not depend on the tiling and at most one tile's maps are held at a time. After the top-k
selection, the kept keypoints' context descriptors are sampled from each level resized by
``ExtractConfig.context_scale``, tiled the same way, and appended to their descriptors.

Coordinates: keypoints are pixel centres ``(x, y)`` of the input image (top-left pixel centre at
``(0, 0)``). A level pixel centre ``x_s`` maps to ``(x_s + 0.5) * W / W_s - 0.5``.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sarreg.config import ExtractConfig  # defined with the other settings (torch-free)

log = logging.getLogger(__name__)

#: receptive-field radius of the Fast-R2D2 network in input pixels, measured (R2D2: 25); a
#: tile_overlap of at least this + 1 (for the 3x3 non-maximum suppression) makes tiling exact
FAST_R2D2_RADIUS = 27
#: keypoints whose local descriptors are computed at once: with refine_radius 3 and 128-d
#: descriptors each temporary of a chunk is about 6 MB, reused from the heap (chunks of 1024
#: made 25 MB ones, mapped and faulted afresh, and about 100 MB more at the peak at 724 px)
LOCAL_CHUNK = 256


@dataclass
class Features:
    """Keypoints of one image.

    Attributes:
        keypoints: ``(N, 2)`` float32, ``x, y`` pixel centres of the input image.
        scales: ``(N,)`` float32, 1 / pyramid scale (1.0 = full resolution, 2.0 = half size).
        scores: ``(N,)`` float32, ranking score (``ExtractConfig.rank``); sorted decreasing
            by extract().
        descriptors: ``(N, D)`` float32, unit L2 norm: the network's descriptor at the
            keypoint (``D`` = the network's ``dim``) or, with a context
            (``ExtractConfig.context_scale``), ``D = 2 dim``: ``[d_point, sqrt(w) d_context]
            / sqrt(1 + w)``, so that dot products weigh both parts by ``1 : w``.
        image_shape: ``(H, W)`` of the input image.
        local_descriptors: ``(N, K, dim)`` float16 unit point descriptors at
            ``local_offsets`` around each keypoint (``ExtractConfig.refine_radius``), or
            ``None``. They share their keypoint's context: matching scales them to the norm of
            the leading ``dim`` entries of ``descriptors`` and adds the context part.
        local_offsets: ``(K, 2)`` float32 offsets ``(dx, dy)`` in pixels of the keypoint's
            pyramid level (multiply by ``scales`` for input pixels), or ``None``.
    """

    keypoints: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_shape: tuple[int, int] = field(default=(0, 0))
    local_descriptors: np.ndarray | None = None
    local_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def subset(self, idx) -> Features:
        """Features selected by an index array or boolean mask."""
        return Features(
            self.keypoints[idx],
            self.scales[idx],
            self.scores[idx],
            self.descriptors[idx],
            self.image_shape,
            None if self.local_descriptors is None else self.local_descriptors[idx],
            self.local_offsets,
        )

    def to_npz(self, path: str | Path) -> None:
        """Save as ``.npz``: ``keypoints`` (N, 3) = x, y, scale; ``descriptors`` (N, D);
        ``scores`` (N,); ``image_shape`` (2,). Written to exactly ``path`` (no suffix added).
        The local descriptors are not saved."""
        kp = np.concatenate([self.keypoints, self.scales[:, None]], axis=1).astype(np.float32)
        with open(path, "wb") as f:
            np.savez(
                f,
                keypoints=kp,
                descriptors=self.descriptors.astype(np.float32),
                scores=self.scores.astype(np.float32),
                image_shape=np.asarray(self.image_shape, dtype=np.int64),
            )

    @classmethod
    def from_npz(cls, path: str | Path) -> Features:
        """Load a file written by :meth:`to_npz`."""
        with np.load(path) as z:
            kp = z["keypoints"].astype(np.float32).reshape(-1, 3)
            shape = tuple(int(v) for v in z["image_shape"]) if "image_shape" in z else (0, 0)
            return cls(
                keypoints=kp[:, :2].copy(),
                scales=kp[:, 2].copy(),
                scores=z["scores"].astype(np.float32),
                descriptors=z["descriptors"].astype(np.float32),
                image_shape=shape,
            )

    @classmethod
    def empty(cls, dim: int, image_shape: tuple[int, int]) -> Features:
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, dim), np.float32),
            image_shape,
        )


# ---------------------------------------------------------------------------------------------
# pure helpers


def _even(n: int) -> int:
    return int(n) + (int(n) % 2)


def level_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H_s, W_s)`` of the pyramid level at ``scale`` for an input of shape ``(H, W)``."""
    h, w = shape
    return max(1, round(h * scale)), max(1, round(w * scale))


def pyramid_scales(shape: tuple[int, int], config: ExtractConfig) -> list[float]:
    """Scales to run for an input of shape ``(H, W)``, largest first (see ExtractConfig)."""
    if config.scales is not None:
        return sorted((float(s) for s in config.scales), reverse=True)
    n = int(math.floor(math.log(config.max_scale / config.min_scale, config.scale_factor) + 1e-9))
    candidates = [config.max_scale / config.scale_factor**i for i in range(n + 1)]
    kept = [
        s for s in candidates if config.min_size <= max(level_shape(shape, s)) <= config.max_size
    ]
    if not kept:

        def distance(s: float) -> float:
            side = max(level_shape(shape, s))
            return max(config.min_size / side, side / config.max_size)

        kept = [min(candidates, key=distance)]
        # an automatic choice (small images, the search's shrunk hypotheses), not a problem
        log.info(
            "no pyramid level of a %dx%d image fits sizes %d..%d; using scale %.3g",
            shape[1], shape[0], config.min_size, config.max_size, kept[0],
        )  # fmt: skip
    return kept


def tile_spans(size: int, tile_size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of length ``size``: ``(core0, core1, tile0, tile1)`` half-open.

    Cores partition ``[0, size)``; a tile is its core plus ``overlap`` on each side, clipped to
    the axis. Core starts and tile starts are even (the Fast network pools by 2).
    """
    if size <= tile_size:
        return [(0, size, 0, size)]
    ov = _even(overlap)
    core = tile_size - 2 * ov
    core -= core % 2
    spans = []
    for c0 in range(0, size, core):
        c1 = min(size, c0 + core)
        spans.append((c0, c1, max(0, c0 - ov), min(size, c1 + ov)))
    return spans


def resize_image(image: np.ndarray, shape_s: tuple[int, int]) -> np.ndarray:
    """``image`` float32 at ``shape_s`` (area interpolation when shrinking, else linear);
    unchanged at the input size."""
    h, w = image.shape
    hs, ws = shape_s
    if (hs, ws) == (h, w):
        return image
    interp = cv2.INTER_AREA if hs * ws < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (ws, hs), interpolation=interp).astype(np.float32, copy=False)


def resize_level(
    image: np.ndarray, mask: np.ndarray, shape_s: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Image (:func:`resize_image`) and mask (nearest, then 3x3 erosion) at ``shape_s``.

    The erosion makes up for nearest-neighbour rounding at the mask's edge; at the input size
    both are returned unchanged.
    """
    hs, ws = shape_s
    if (hs, ws) == image.shape:
        return image, mask
    m = cv2.resize(mask.astype(np.uint8), (ws, hs), interpolation=cv2.INTER_NEAREST)
    m = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return resize_image(image, shape_s), m.astype(bool)


def level_to_input(xy_s: np.ndarray, shape: tuple[int, int], shape_s: tuple[int, int]):
    """Level pixel centres ``(N, 2)`` -> input pixel centres ``(N, 2)`` (float64)."""
    h, w = shape
    hs, ws = shape_s
    factor = np.array([w / ws, h / hs])
    return (np.asarray(xy_s, np.float64) + 0.5) * factor - 0.5


def local_offsets(radius: int) -> np.ndarray:
    """``((2 r + 1)^2, 2)`` float32 integer offsets ``(dx, dy)``, row-major, centre included."""
    r = np.arange(-radius, radius + 1, dtype=np.float32)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    return np.stack([dx.ravel(), dy.ravel()], axis=1)


def local_maxima(rep: torch.Tensor) -> torch.Tensor:
    """Bool ``(H, W)``: 3x3 non-maximum suppression (equality with the 3x3 max) of ``(H, W)``."""
    pooled = F.max_pool2d(rep[None, None], 3, stride=1, padding=1)[0, 0]
    return rep == pooled


# ---------------------------------------------------------------------------------------------
# extraction


@dataclass
class _Candidates:
    """Keypoints of one tile / level, in input pixel coordinates. Their local descriptors
    stay in the per-tile blocks of :class:`_LocalBlocks`: ``block``/``row`` point there."""

    xy: np.ndarray  # (n, 2) float64
    scale: np.ndarray  # (n,) float32
    score: np.ndarray  # (n,) float64, see _ranking_score
    desc: np.ndarray  # (n, D) float32
    block: np.ndarray  # (n,) int64
    row: np.ndarray  # (n,) int64

    @staticmethod
    def concat(parts: list[_Candidates], dim: int) -> _Candidates:
        if not parts:
            return _Candidates(
                np.zeros((0, 2)), np.zeros(0, np.float32), np.zeros(0, np.float64),
                np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
            )  # fmt: skip
        return _Candidates(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Candidates))
        )

    def top(self, k: int) -> _Candidates:
        """The ``k`` best by score (stable: earlier candidates win ties), best first."""
        order = np.argsort(-self.score, kind="stable")[:k]
        return _Candidates(*(getattr(self, f.name)[order] for f in fields(self)))


class _LocalBlocks:
    """Local descriptors ``(n, K, D)`` float16 of each tile, kept while referenced."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray | None] = []

    def add(self, local: np.ndarray) -> int:
        self.blocks.append(local)
        return len(self.blocks) - 1

    def release_unused(self, kept: _Candidates) -> None:
        """Drop the blocks ``kept`` no longer references and the rows of the others it does
        not (``kept.row`` is renumbered), so at most ``top_k`` rows are held in all."""
        used = set(np.unique(kept.block).tolist())
        for i in range(len(self.blocks)):
            if i not in used:
                self.blocks[i] = None
        for b in used:
            block = self.blocks[b]
            idx = np.flatnonzero(kept.block == b)
            if len(idx) < 0.75 * len(block):  # compact: copy the used rows, renumbered
                rows = kept.row[idx]
                self.blocks[b] = np.ascontiguousarray(block[rows])
                kept.row[idx] = np.arange(len(idx))

    def gather(self, kept: _Candidates, n_local: int, dim: int) -> np.ndarray:
        """Local descriptors ``(len(kept), n_local, dim)`` float16 in ``kept``'s order: the
        block itself when ``kept`` is all of one block's rows in order (one tile: no copy)."""
        if len(kept.block) and np.all(kept.block == kept.block[0]):
            block = self.blocks[int(kept.block[0])]
            if len(block) == len(kept.row) and np.array_equal(kept.row, np.arange(len(block))):
                return block
        out = np.zeros((len(kept.block), n_local, dim), np.float16)
        for b in np.unique(kept.block):
            idx = np.flatnonzero(kept.block == b)
            out[idx] = np.take(self.blocks[int(b)], kept.row[idx], axis=0)
        return out


def _ranking_score(rel: torch.Tensor, rep: torch.Tensor, rank: str) -> np.ndarray:
    """Ranking key ``(n,)`` float64 of candidates with reliability/repeatability ``(n,)``.

    'reliability': the reliability, ties broken by repeatability. The reliability saturates
    at exactly 1.0 in float32 on a large share of the peaks of a trained network, and
    without the tie-break those would be kept in raster order (the top of the image first).
    The repeatability is added at ``2**-26`` times its value, below the float32 spacing of
    the reliability near 1 (``2**-24``), so distinct reliabilities keep their order.
    'score': reliability x repeatability (R2D2).
    """
    rel64 = rel.double().cpu().numpy()
    rep64 = rep.double().cpu().numpy()
    if rank == "reliability":
        return rel64 + rep64 * 2.0**-26
    return rel64 * rep64


def _tile_candidates(
    net,
    img_s: np.ndarray,
    mask_s: np.ndarray,
    rows: tuple[int, int, int, int],
    cols: tuple[int, int, int, int],
    config: ExtractConfig,
    device: torch.device,
):
    """Candidate keypoints in one tile's core, in raster order: ``(maps, xy_tile (n, 2)
    float64 tensor in tile pixels, score (n,) float64 from _ranking_score)``."""
    c_r0, c_r1, t_r0, t_r1 = rows
    c_c0, c_c1, t_c0, t_c1 = cols
    hs, ws = img_s.shape
    tile = torch.from_numpy(np.ascontiguousarray(img_s[t_r0:t_r1, t_c0:t_c1]))
    maps = net.dense_maps(tile[None, None].to(device))
    rep = maps.repeatability[0, 0]
    rel = maps.reliability[0, 0]
    peak_map = {"repeatability": rep, "reliability": rel, "score": rep * rel}[config.peaks]
    keep = local_maxima(peak_map)
    keep &= (rep >= config.rep_threshold) & (rel >= config.rel_threshold)
    # core of the tile, away from the level's border, inside the mask
    b = config.border
    r_lo, r_hi = max(c_r0, b), min(c_r1, hs - b)
    c_lo, c_hi = max(c_c0, b), min(c_c1, ws - b)
    if r_lo >= r_hi or c_lo >= c_hi:
        return maps, torch.zeros((0, 2), dtype=torch.float64), np.zeros(0, np.float64)
    region = torch.zeros_like(keep)
    region[r_lo - t_r0 : r_hi - t_r0, c_lo - t_c0 : c_hi - t_c0] = True
    m = torch.from_numpy(np.ascontiguousarray(mask_s[t_r0:t_r1, t_c0:t_c1])).to(keep.device)
    keep &= region & m
    yy, xx = torch.nonzero(keep, as_tuple=True)
    score = _ranking_score(rel[yy, xx], rep[yy, xx], config.rank)
    xy_tile = torch.stack([xx, yy], dim=1).to(torch.float64).cpu()
    return maps, xy_tile, score


def _sample_tile(net, maps, xy_tile: torch.Tensor, radius: int):
    """Descriptors ``(n, D)`` float32 at ``xy_tile`` and, with ``radius`` > 0, the local
    descriptors ``(n, (2 r + 1)^2, D)`` float16 at :func:`local_offsets` around them (clamped
    to the tile, which reaches ``tile_overlap`` beyond its core); ``(n, 0, D)`` without."""
    desc = net.descriptors_at(maps, xy_tile).float().cpu().numpy()
    n_local = (2 * radius + 1) ** 2 if radius else 0
    local = np.zeros((len(xy_tile), n_local, net.dim), np.float16)
    if n_local and len(xy_tile):
        step = LOCAL_CHUNK
        for i0 in range(0, len(xy_tile), step):  # bounded temporary memory
            got = net.descriptors_around(maps, xy_tile[i0 : i0 + step], radius)
            local[i0 : i0 + step] = got.to(torch.float16).cpu().numpy()
    return desc, local


def input_to_level(xy: np.ndarray, shape: tuple[int, int], shape_s: tuple[int, int]):
    """Input pixel centres ``(N, 2)`` -> level pixel centres ``(N, 2)`` (float64); the
    inverse of :func:`level_to_input`."""
    h, w = shape
    hs, ws = shape_s
    factor = np.array([ws / w, hs / h])
    return (np.asarray(xy, np.float64) + 0.5) * factor - 0.5


def context_shape(
    shape: tuple[int, int], context_scale: float, inv_scale: float
) -> tuple[int, int]:
    """``(H_c, W_c)`` of the context image of the keypoints found at scale ``1 / inv_scale``
    (``inv_scale`` as stored in :attr:`Features.scales`, float32) of an ``(H, W)`` input: the
    image resized to ``context_scale`` times their level, at least 2 x 2 pixels."""
    hs, ws = level_shape(shape, context_scale / float(np.float32(inv_scale)))
    return max(2, hs), max(2, ws)


def context_descriptors(
    net,
    image: np.ndarray,
    xy: np.ndarray,
    inv_scale: np.ndarray,
    config: ExtractConfig,
    device: torch.device,
    levels: dict | None = None,
) -> np.ndarray:
    """Context descriptors ``(N, D)`` float32, unit norm, of keypoints ``xy`` ``(N, 2)``
    (input pixel centres) found at pyramid scales ``1 / inv_scale`` ``(N,)``: the network's
    descriptors at the same places of the image resized to ``config.context_scale`` times each
    keypoint's level (:func:`context_shape`, tiled like the levels). Runs the network once
    per distinct level among the keypoints, on a quarter of that level's pixels for 0.5,
    unless ``levels`` holds the network's maps of that very image: ``{(H_c, W_c): DenseMaps}``
    of pyramid levels that ran as one tile (the level's image is the same resize of the same
    input, so the descriptors are the same numbers)."""
    shape = (int(image.shape[0]), int(image.shape[1]))
    out = np.zeros((len(xy), int(net.dim)), np.float32)
    levels = levels or {}
    # only descriptors are sampled here: the backbone alone when the network can skip the heads
    run = getattr(net, "descriptor_maps", None) or net.dense_maps
    for inv in np.unique(inv_scale):
        idx = np.flatnonzero(inv_scale == inv)
        hs, ws = context_shape(shape, config.context_scale, inv)
        pos = input_to_level(xy[idx], shape, (hs, ws))
        pos = np.clip(pos, 0.0, [ws - 1.0, hs - 1.0])
        if (hs, ws) in levels:
            maps = levels[(hs, ws)]
            out[idx] = net.descriptors_at(maps, torch.from_numpy(pos)).float().cpu().numpy()
            continue
        img_c = resize_image(image, (hs, ws))
        near = np.rint(pos).astype(np.int64)  # the tile whose core holds the nearest pixel
        for c_r0, c_r1, t_r0, t_r1 in tile_spans(hs, config.tile_size, config.tile_overlap):
            for c_c0, c_c1, t_c0, t_c1 in tile_spans(ws, config.tile_size, config.tile_overlap):
                inside = (near[:, 1] >= c_r0) & (near[:, 1] < c_r1)
                inside &= (near[:, 0] >= c_c0) & (near[:, 0] < c_c1)
                if not inside.any():
                    continue
                tile = np.ascontiguousarray(img_c[t_r0:t_r1, t_c0:t_c1])
                maps = run(torch.from_numpy(tile)[None, None].to(device))
                local_xy = torch.from_numpy(pos[inside] - [t_c0, t_r0])
                out[idx[inside]] = net.descriptors_at(maps, local_xy).float().cpu().numpy()
                maps = None  # not held while the next tile runs (peak memory)
    return out


def with_context(point: np.ndarray, context: np.ndarray, weight: float) -> np.ndarray:
    """Extended descriptors ``(N, 2 D)`` float32, unit norm, from unit point and context
    descriptors ``(N, D)``: ``[point, sqrt(weight) context] / sqrt(1 + weight)``."""
    out = np.concatenate([point, math.sqrt(weight) * context], axis=1)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norm, 1e-12)).astype(np.float32)


def progress_bar(total: int, desc: str, unit: str, show: bool) -> tqdm:
    """A tqdm bar of ``total`` ``unit`` s on stderr, drawn only when ``show`` and stderr is a
    terminal, and cleared when done."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=not (show and sys.stderr.isatty()))  # fmt: skip


def extract(
    net,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    config: ExtractConfig | None = None,
    progress: bool | None = None,
) -> Features:
    """Multi-scale keypoints and descriptors of one image.

    Args:
        net: network with ``dense_maps(x (1, 1, h, w)) -> DenseMaps``,
            ``descriptors_at(maps, xy (n, 2)) -> (n, D)``,
            ``descriptors_around(maps, xy, r) -> (n, (2r + 1)^2, D)`` and ``dim``
            (:class:`sarreg.model.R2D2Net`; its descriptor whitening, when fitted, applies).
            Run in eval mode; its mode is restored after.
        image: ``(H, W)`` float32 in ``[0, 1]`` (from ``sarreg.preprocess``).
        mask: ``(H, W)`` bool keypoint mask (True = keypoints allowed); ``None`` = everywhere.
        config: :class:`ExtractConfig`.
        progress: overrides ``config.progress``.

    Returns:
        :class:`Features`, at most ``config.top_k``, sorted by decreasing score; keypoints in
        input pixel centres, ``scales`` = 1 / pyramid scale.
    """
    config = config or ExtractConfig()
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image has non-finite values; run sarreg.preprocess first")
    msk = np.ones(img.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if msk.shape != img.shape:
        raise ValueError(f"mask shape {msk.shape} differs from image shape {img.shape}")
    shape = (int(img.shape[0]), int(img.shape[1]))
    dim = int(net.dim)
    device = torch.device(config.device)
    show = config.progress if progress is None else progress

    scales = pyramid_scales(shape, config)
    plan = []
    for s in scales:
        hs, ws = level_shape(shape, s)
        spans_r = tile_spans(hs, config.tile_size, config.tile_overlap)
        spans_c = tile_spans(ws, config.tile_size, config.tile_overlap)
        plan.append((s, (hs, ws), spans_r, spans_c))
    n_tiles = sum(len(r) * len(c) for _, _, r, c in plan)

    was_training = bool(getattr(net, "training", False))
    if hasattr(net, "to"):
        net.to(device)
    if hasattr(net, "eval"):
        net.eval()
    # pyramid levels that are also the context image of a larger level: their maps are kept
    # (one-tile levels only, bounded memory) and reused by the context pass
    reuse_shapes = set()
    if config.context_scale is not None:
        reuse_shapes = {context_shape(shape, config.context_scale, 1.0 / s) for s in scales}
    levels: dict = {}
    offsets = local_offsets(config.refine_radius) if config.refine_radius else None
    n_local = 0 if offsets is None else len(offsets)
    kept = _Candidates.concat([], dim)
    blocks = _LocalBlocks()
    bar = progress_bar(n_tiles, "keypoints", "tile", show)
    try:
        with torch.inference_mode():
            for s, shape_s, spans_r, spans_c in plan:
                img_s, mask_s = resize_level(img, msk, shape_s)
                n_level = 0
                for rows in spans_r:
                    for cols in spans_c:
                        maps, xy_t, score = _tile_candidates(
                            net, img_s, mask_s, rows, cols, config, device
                        )
                        if shape_s in reuse_shapes and len(spans_r) == len(spans_c) == 1:
                            levels[shape_s] = maps
                        bar.update(1)
                        if not len(score):
                            maps = None
                            continue
                        # descriptors only for the candidates that make the top_k now (stable:
                        # ties go to the keypoints already kept, then to raster order), in
                        # that order (a one-tile level's local descriptors need no reordering)
                        merged = np.concatenate([kept.score, score])
                        top = np.argsort(-merged, kind="stable")[: config.top_k]
                        new = top[top >= len(kept.score)] - len(kept.score)
                        desc, local = _sample_tile(net, maps, xy_t[new], config.refine_radius)
                        maps = None  # not held while the next tile runs (peak memory)
                        xy = level_to_input(xy_t[new].numpy() + [cols[2], rows[2]], shape, shape_s)
                        scl = np.full(len(new), 1.0 / s, np.float32)
                        b = np.full(len(new), blocks.add(local), np.int64)
                        tile = _Candidates(xy, scl, score[new], desc, b, np.arange(len(new)))
                        kept = _Candidates.concat([kept, tile], dim).top(config.top_k)
                        blocks.release_unused(kept)
                        n_level += len(new)
                log.debug("scale %.3f (%dx%d): %d entered the top k", s, *shape_s[::-1], n_level)
            descriptors = kept.desc.astype(np.float32)
            if config.context_scale is not None:
                context = context_descriptors(net, img, kept.xy, kept.scale, config, device, levels)
                descriptors = with_context(descriptors, context, config.context_weight)
            levels.clear()
    finally:
        bar.close()
        if was_training and hasattr(net, "train"):
            net.train(True)
    log.info("%d keypoints on %d scales (%d tiles)", len(kept.score), len(scales), n_tiles)
    return Features(
        keypoints=kept.xy.astype(np.float32),
        scales=kept.scale.astype(np.float32),
        scores=kept.score.astype(np.float32),
        descriptors=descriptors,
        image_shape=shape,
        local_descriptors=None if offsets is None else blocks.gather(kept, n_local, dim),
        local_offsets=offsets,
    )
