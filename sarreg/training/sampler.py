"""Query / positive / negative sampling for the AP loss (vectorised, cheap on CPU).

Queries lie on a regular grid of image 1 (step ``query_step``, ``border`` pixels from the edge,
random grid offset per call). For each query with usable ground truth at image-2 position
``p2``:

- the *positive* is the best-matching image-2 descriptor among the points ``p2 + o`` for the
  integer offsets ``o`` with ``|o| <= pos_radius`` (sampled bilinearly, so the exact GT point
  is one of them);
- the *negatives* are image-2 descriptors of every image in the batch on a grid of step
  ``neg_step`` (random offset), on valid image content, except those of the query's own pair
  closer than ``neg_radius`` to ``p2`` (neither positive nor negative).

Descriptors are sampled from the network's low-resolution features with exactly the bilinear
rule of its final upsampling (``align_corners=False``), then L2-normalized, so the loss sees the
same descriptors as ``R2D2Net.forward`` without building the ``(B, D, H, W)`` tensor.
Coordinates are ``(x, y)`` pixel centres, top-left centre ``(0, 0)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling geometry (pixels of the input image).

    Attributes:
        border: queries and negatives keep this distance from the image edge.
        query_step: query grid step in image 1.
        pos_radius: positives are searched within this radius of the GT position.
        neg_radius: same-pair negatives must be at least this far from the GT position.
        neg_step: negative grid step in image 2.
    """

    border: int = 16
    query_step: int = 8
    pos_radius: float = 3.0
    neg_radius: float = 7.0
    neg_step: int = 8

    def __post_init__(self) -> None:
        from sarreg.errors import ConfigError

        if self.query_step < 1 or self.neg_step < 1 or self.border < 0:
            raise ConfigError(
                "sampler steps must be >= 1 and border >= 0",
                "use e.g. query_step: 8, neg_step: 8, border: 16",
            )
        if not 0 <= self.pos_radius < self.neg_radius:
            raise ConfigError(
                f"sampler needs 0 <= pos_radius < neg_radius, got {self.pos_radius} and "
                f"{self.neg_radius}",
                "use e.g. pos_radius: 3, neg_radius: 7",
            )


@dataclass
class APSample:
    """Inputs of the AP loss for ``Q`` valid queries and ``M`` shared negatives.

    Attributes:
        scores: ``(Q, 1 + M)`` cosine similarities; column 0 is the positive.
        labels: ``(Q, 1 + M)`` bool, True in column 0.
        weights: ``(Q, 1 + M)`` float, 0 for ignored negatives.
        reliability: ``(Q,)`` image-1 reliability at the queries.
        query_xy: ``(Q, 2)`` query pixel centres in image 1.
        gt_xy: ``(Q, 2)`` their ground-truth positions in image 2.
        positive_xy: ``(Q, 2)`` positions of the chosen positives in image 2.
        batch_index: ``(Q,)`` int64 pair index of each query.
    """

    scores: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    reliability: torch.Tensor
    query_xy: torch.Tensor
    gt_xy: torch.Tensor
    positive_xy: torch.Tensor
    batch_index: torch.Tensor


def grid_xy(
    shape: tuple[int, int], step: int, border: int, offset: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Integer pixel centres ``(N, 2)`` (x, y) on a grid, ``border`` px inside the image."""
    h, w = shape
    xs = torch.arange(border + offset[0], w - border, step)
    ys = torch.arange(border + offset[1], h - border, step)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(torch.float32)


def disc_offsets(radius: float) -> torch.Tensor:
    """Integer offsets ``(K, 2)`` with ``|o| <= radius``, the zero offset first."""
    r = int(math.floor(radius))
    rng = torch.arange(-r, r + 1)
    gy, gx = torch.meshgrid(rng, rng, indexing="ij")
    off = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(torch.float32)
    off = off[(off**2).sum(1) <= radius**2 + 1e-9]
    order = torch.argsort((off**2).sum(1), stable=True)
    return off[order]


def sample_descriptors(
    low: torch.Tensor,
    xy: torch.Tensor,
    image_shape: tuple[int, int],
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Unit-norm descriptors at pixel centres, from low-resolution features.

    Args:
        low: ``(B, D, h, w)`` raw features (``R2D2Net.low_res_features``).
        xy: ``(B, N, 2)`` pixel centres (x, y) in the ``image_shape`` = ``(H, W)`` input grid.
        project: applied to the unit descriptors ``(B, N, D)`` (e.g. the network's
            whitening); None = none.

    Returns ``(B, N, D)``; at integer pixels identical (up to float rounding) to the
    descriptors of ``R2D2Net.forward`` (bilinear upsampling, ``align_corners=False``,
    border-clamped).
    """
    h, w = image_shape
    scale = xy.new_tensor([2.0 / w, 2.0 / h])
    grid = ((xy + 0.5) * scale - 1.0).to(low.dtype)
    out = F.grid_sample(
        low, grid[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=False
    )
    desc = F.normalize(out[..., 0].transpose(1, 2), p=2, dim=2)
    return desc if project is None else project(desc)


def _random_offset(step: int, generator: torch.Generator | None) -> tuple[int, int]:
    if step <= 1:
        return (0, 0)
    o = torch.randint(0, step, (2,), generator=generator)
    return int(o[0]), int(o[1])


def sample_ap(
    low1: torch.Tensor,
    low2: torch.Tensor,
    reliability1: torch.Tensor,
    field: torch.Tensor,
    valid: torch.Tensor,
    mask2: torch.Tensor,
    image_shape: tuple[int, int],
    config: SamplerConfig = SamplerConfig(),
    generator: torch.Generator | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> APSample:
    """Queries, positives and negatives for the AP loss of a batch of pairs.

    Args:
        low1, low2: ``(B, D, h, w)`` low-resolution features of images 1 and 2.
        reliability1: ``(B, 1, H, W)`` reliability of image 1.
        field: ``(B, H, W, 2)`` image-2 position of every image-1 pixel centre.
        valid: ``(B, H, W)`` bool, usable ground truth.
        mask2: ``(B, H, W)`` bool, valid image-2 content (negatives only there).
        image_shape: ``(H, W)`` of both images.
        config: sampling geometry.
        generator: torch random generator for the grid offsets.
        project: applied to every sampled unit descriptor (see :func:`sample_descriptors`).
    """
    b = low1.shape[0]
    h, w = image_shape
    device = low1.device
    cfg = config

    q_off = _random_offset(cfg.query_step, generator)
    q_xy = grid_xy(image_shape, cfg.query_step, cfg.border, q_off).to(device)
    qx, qy = q_xy[:, 0].long(), q_xy[:, 1].long()
    q_valid = valid[:, qy, qx]  # (B, Nq)
    gt = field[:, qy, qx].to(torch.float32)  # (B, Nq, 2)
    nq = q_xy.shape[0]
    dq = sample_descriptors(low1, q_xy[None].expand(b, -1, -1), image_shape, project)  # (B, Nq, D)

    # positives: best match among GT + integer offsets within pos_radius
    off = disc_offsets(cfg.pos_radius).to(device)  # (K, 2)
    cand = gt[:, :, None, :] + off[None, None]  # (B, Nq, K, 2)
    lim = torch.tensor([w - 1.0, h - 1.0], device=device)
    inside = ((cand >= 0) & (cand <= lim)).all(-1)
    k = off.shape[0]
    dc = sample_descriptors(low2, cand.reshape(b, nq * k, 2), image_shape, project)
    dc = dc.reshape(b, nq, k, -1)
    pos_all = (dc * dq[:, :, None, :]).sum(-1).masked_fill(~inside, -2.0)
    pos, arg = pos_all.max(dim=2)  # (B, Nq)
    pos_xy = torch.gather(cand, 2, arg[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]

    # negatives: grid of every image 2 in the batch
    n_xy = grid_xy(image_shape, cfg.neg_step, cfg.border, _random_offset(cfg.neg_step, generator))
    n_xy = n_xy.to(device)
    nn_ = n_xy.shape[0]
    dn = sample_descriptors(low2, n_xy[None].expand(b, -1, -1), image_shape, project)
    n_valid = mask2[:, n_xy[:, 1].long(), n_xy[:, 0].long()]  # (B, Nn)
    neg = dq.reshape(b * nq, -1) @ dn.reshape(b * nn_, -1).t()  # (B*Nq, B*Nn)

    dist2 = ((gt[:, :, None, :] - n_xy[None, None]) ** 2).sum(-1)  # (B, Nq, Nn)
    near = dist2 < cfg.neg_radius**2
    weights = n_valid.reshape(1, b * nn_).to(neg.dtype).expand(b * nq, -1).clone()
    eye = torch.eye(b, dtype=torch.bool, device=device)
    near_full = (eye[:, None, :, None] & near[:, :, None, :]).reshape(b * nq, b * nn_)
    weights = weights.masked_fill(near_full, 0.0)

    keep = q_valid.reshape(-1)
    scores = torch.cat([pos.reshape(-1, 1), neg], dim=1)[keep]
    weights = torch.cat([torch.ones_like(weights[:, :1]), weights], dim=1)[keep]
    labels = torch.zeros_like(scores, dtype=torch.bool)
    labels[:, 0] = True
    rel = reliability1[:, 0, qy, qx].reshape(-1)[keep]
    bidx = torch.arange(b, device=device).repeat_interleave(nq)[keep]
    return APSample(
        scores=scores,
        labels=labels,
        weights=weights,
        reliability=rel,
        query_xy=q_xy[None].expand(b, -1, -1).reshape(-1, 2)[keep],
        gt_xy=gt.reshape(-1, 2)[keep],
        positive_xy=pos_xy.reshape(-1, 2)[keep],
        batch_index=bidx,
    )
