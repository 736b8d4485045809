"""R2D2 training losses (Revaud et al. 2019), written from the method description.

- :func:`cosim_loss`: repeatability maps of the two images should agree: ``1 - mean cosine
  similarity`` between ``N x N`` patches (stride ``N/2``, flattened) of map 1 and map 2 warped
  into image 1 by the ground truth, patches weighted by their valid fraction.
- :func:`peaky_loss`: each map should be peaky: ``1 - mean(maxpool_N(S) - avgpool_N(S))``.
- :func:`quantized_ap` + :func:`ap_reliability_loss`: differentiable average precision of each
  query's ranking (similarity quantized into ``nq`` bins with triangular soft assignment) and
  ``1 - AP * R - kappa * (1 - R)`` with the reliability ``R`` at the query.

Maps are ``(B, 1, H, W)``; ground-truth fields ``(B, H, W, 2)`` give for each image-1 pixel
centre its ``(x, y)`` pixel-centre position in image 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def field_to_grid(field: torch.Tensor, shape2: tuple[int, int]) -> torch.Tensor:
    """Pixel-centre positions ``(..., 2)`` in an image of ``shape2`` -> ``grid_sample`` grid.

    Uses ``align_corners=True`` coordinates: pixel centre 0 -> -1, ``W - 1`` -> +1.
    """
    h2, w2 = shape2
    scale = field.new_tensor([2.0 / max(w2 - 1, 1), 2.0 / max(h2 - 1, 1)])
    return field * scale - 1.0


def warp_to_image1(map2: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Resample ``map2`` ``(B, C, H2, W2)`` at ``field`` ``(B, H, W, 2)`` -> ``(B, C, H, W)``."""
    grid = field_to_grid(field, map2.shape[-2:]).to(map2.dtype)
    return F.grid_sample(map2, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def cosim_loss(
    rep1: torch.Tensor,
    rep2: torch.Tensor,
    field: torch.Tensor,
    valid: torch.Tensor,
    n: int = 16,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Repeatability agreement: ``1 - mean patch cosine similarity`` (scalar).

    Args:
        rep1, rep2: ``(B, 1, H, W)`` repeatability maps of image 1 and image 2.
        field: ``(B, H, W, 2)`` image-2 position of each image-1 pixel centre.
        valid: ``(B, H, W)`` bool, ground truth usable; other pixels are zeroed in both maps.
        n: patch size; patches are taken with stride ``n // 2``.
    """
    v = valid[:, None].to(rep1.dtype)
    a = rep1 * v
    b = warp_to_image1(rep2, field) * v
    stride = max(n // 2, 1)
    ab = F.avg_pool2d(a * b, n, stride)
    aa = F.avg_pool2d(a * a, n, stride)
    bb = F.avg_pool2d(b * b, n, stride)
    weight = F.avg_pool2d(v, n, stride)
    cos = ab / torch.sqrt(aa * bb + eps)
    total = weight.sum()
    if total <= 0:
        return rep1.sum() * 0.0
    return 1.0 - (cos * weight).sum() / total


def peaky_loss(
    rep: torch.Tensor, mask: torch.Tensor | None = None, n: int = 16, stride: int = 1
) -> torch.Tensor:
    """Peakiness: ``1 - mean(maxpool(S) - avgpool(S))`` over ``n x n`` windows (scalar).

    Windows of size ``n + 1`` centred on each output pixel (padding ``n // 2``), every
    ``stride`` pixels; with ``mask`` ``(B, H, W)`` only windows centred on valid pixels count.
    """
    k = n + 1
    pad = n // 2
    mx = F.max_pool2d(rep, k, stride=stride, padding=pad)
    av = F.avg_pool2d(rep, k, stride=stride, padding=pad, count_include_pad=False)
    diff = mx - av
    if mask is None:
        return 1.0 - diff.mean()
    m = mask[:, None, ::stride, ::stride].to(rep.dtype)
    m = m[..., : diff.shape[-2], : diff.shape[-1]]
    total = m.sum()
    if total <= 0:
        return rep.sum() * 0.0
    return 1.0 - (diff * m).sum() / total


def soft_histogram(
    scores: torch.Tensor,
    weights: torch.Tensor,
    nq: int = 20,
    smin: float = 0.0,
    smax: float = 1.0,
) -> torch.Tensor:
    """Triangular soft assignment of ``scores`` ``(Q, M)`` into ``nq`` bins, summed per row.

    Bin ``k`` is centred on ``smax - k * delta`` with ``delta = (smax - smin) / (nq - 1)``
    (bin 0 = most similar). Each score (clamped to ``[smin, smax]``) gives weight
    ``1 - |s - c_k| / delta`` to its two nearest bins, times ``weights`` ``(Q, M)``.
    Returns ``(Q, nq)``; differentiable in ``scores`` and ``weights``. Cost ``O(Q M)``.
    """
    if nq < 2:
        raise ValueError("nq must be >= 2")
    delta = (smax - smin) / (nq - 1)
    t = (smax - scores.clamp(smin, smax)) / delta
    k0 = t.detach().floor().clamp(0, nq - 2)
    frac = t - k0
    k0 = k0.long()
    hist = scores.new_zeros((scores.shape[0], nq))
    hist = hist.scatter_add(1, k0, (1.0 - frac) * weights)
    return hist.scatter_add(1, k0 + 1, frac * weights)


def quantized_ap(
    scores: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    nq: int = 20,
    smin: float = 0.0,
    smax: float = 1.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Differentiable average precision per query.

    Args:
        scores: ``(Q, M)`` similarities of each query to its M candidates.
        labels: ``(Q, M)`` bool, True for positives.
        weights: ``(Q, M)`` candidate weights (0 = ignore the candidate), default all 1.
        nq: number of quantization bins on ``[smin, smax]``.

    Returns ``ap`` ``(Q,)``: ``sum_k precision(k) * (recall(k) - recall(k-1))`` with the
    per-bin counts of positives and of all candidates taken from :func:`soft_histogram`,
    bins ordered from the most similar. Queries with no positive get AP 0.
    """
    w = torch.ones_like(scores) if weights is None else weights.to(scores.dtype)
    pos_w = w * labels.to(scores.dtype)
    hist_all = soft_histogram(scores, w, nq, smin, smax)
    hist_pos = soft_histogram(scores, pos_w, nq, smin, smax)
    n_pos = pos_w.sum(dim=1, keepdim=True)
    precision = hist_pos.cumsum(1) / (hist_all.cumsum(1) + eps)
    recall_step = hist_pos / (n_pos + eps)
    return (precision * recall_step).sum(dim=1)


def ap_reliability_loss(ap: torch.Tensor, reliability: torch.Tensor, kappa: float = 0.5):
    """Per-query loss ``1 - AP * R - kappa * (1 - R)`` (same shape as ``ap``)."""
    return 1.0 - ap * reliability - kappa * (1.0 - reliability)


def exact_ap(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reference (non-differentiable) AP per row: mean precision at each positive's rank.

    Ties are broken pessimistically (negatives first). ``(Q, M)`` -> ``(Q,)``.
    """
    out = []
    for s, lab in zip(scores, labels, strict=True):
        order = torch.argsort(s - 1e-9 * lab.to(s.dtype), descending=True)
        hits = lab[order].to(torch.float64)
        if hits.sum() == 0:
            out.append(0.0)
            continue
        prec = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
        out.append(float((prec * hits).sum() / hits.sum()))
    return torch.tensor(out, dtype=torch.float64)


@dataclass(frozen=True)
class LossConfig:
    """Weights and parameters of the R2D2 objective.

    Attributes:
        w_cosim, w_peaky, w_ap: loss weights (repeatability agreement, peakiness, AP).
        w_ap_plain: weight of an extra plain ``1 - AP`` term (not reliability-weighted). The
            R2D2 loss alone lets the reliability collapse to 0 early on (all queries below
            ``kappa``), which also stops the descriptor gradient ``-R dAP``; this term keeps
            the descriptors learning. 0 = the original objective.
        reliability_warmup: steps during which the reliability gets no gradient (the AP loss
            uses it as a constant). Queries' APs start far below ``kappa`` on speckled data;
            learning the reliability then saturates its softmax at ~0 everywhere, a state in
            which its gradient (scaled by ``R (1 - R)``) is dominated by the wrong queries.
        n: patch size N of the repeatability losses.
        peaky_stride: stride of the peakiness windows (1 = every pixel, or N/2).
        kappa: AP threshold below which a query should be declared unreliable.
        nq: quantization bins of the AP.
        ap_min, ap_max: similarity range of the bins.
        whitened: the AP loss compares descriptors through the network's descriptor
            whitening (fitted on training pairs before the first step and at each
            validation; needs ``whiten.pairs``), so that training optimizes the similarities
            inference uses. False = the network's own descriptors.
    """

    w_cosim: float = 1.0
    w_peaky: float = 1.0
    w_ap: float = 1.0
    w_ap_plain: float = 0.0
    reliability_warmup: int = 0
    n: int = 16
    peaky_stride: int = 1
    kappa: float = 0.5
    nq: int = 20
    ap_min: float = 0.0
    ap_max: float = 1.0
    whitened: bool = False

    def __post_init__(self) -> None:
        from sarreg.errors import ConfigError

        if self.n < 2 or self.n % 2:
            raise ConfigError(f"loss.n must be an even number >= 2, got {self.n}", "use n: 16")
        if self.nq < 2 or not self.ap_min < self.ap_max:
            raise ConfigError(
                "loss.nq must be >= 2 and ap_min < ap_max", "use nq: 20, ap_min: 0, ap_max: 1"
            )
        if self.peaky_stride < 1:
            raise ConfigError("loss.peaky_stride must be >= 1", "use peaky_stride: 1")
