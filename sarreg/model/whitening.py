"""Descriptor whitening: a linear projection of the descriptors, fitted on matching pairs.

The network's descriptors are trained by a ranking loss on cosine similarity, which leaves
the differences between two views of the same point larger along some directions of the
descriptor space than along others. Whitening by the covariance of those differences
(the first step of the learned whitening of Radenovic, Tolias and Chum, TPAMI 2018, here on
local descriptors) scales each direction by how reliably it separates points:

    d' = normalize(P (d - mu)),   P = S^p C^(-1/2),   C = cov(d1 - d2) over matching pairs,

with ``C`` shrunk towards a multiple of the identity (``shrink``) so that directions the pairs
barely vary along are not blown up, and ``S`` the covariance of all descriptors after that
first step: ``S^p`` (``spread_power`` p, e.g. 0.3) then favours the directions along which
different points spread widely, a softened Fisher criterion (spread between points over
spread within pairs). ``mu`` is the mean descriptor. The projection is fitted
after training (``sarreg.training.whiten``), stored with the network's weights and applied
wherever descriptors are sampled for matching (``R2D2Net.descriptors_at`` and
``R2D2Net.descriptors_around``); the training losses see the network's own descriptors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DescriptorWhitening(nn.Module):
    """``d -> normalize((d - mean) @ matrix.T)`` on the last axis; the identity until fitted.

    Buffers (saved in the state dict as ``whitening.mean`` ``(D,)`` and ``whitening.matrix``
    ``(D, D)``): zeros and the identity by default, which :attr:`active` reports as not
    fitted (the projection is then skipped, so descriptors stay bit-identical).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @property
    def active(self) -> bool:
        """True when a projection other than the identity is set."""
        eye = torch.eye(self.matrix.shape[0], dtype=self.matrix.dtype, device=self.matrix.device)
        return bool(self.mean.any()) or not torch.equal(self.matrix, eye)

    def set(self, mean, matrix) -> None:
        """Set the projection from arrays ``mean`` ``(D,)`` and ``matrix`` ``(D, D)``."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        matrix = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
        if mean.shape != self.mean.shape or matrix.shape != self.matrix.shape:
            raise ValueError(
                f"whitening of shapes {tuple(mean.shape)}, {tuple(matrix.shape)} does not fit "
                f"descriptors of dimension {self.mean.shape[0]}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(matrix).all()):
            raise ValueError("whitening must be finite")
        self.mean.copy_(mean)
        self.matrix.copy_(matrix)

    def reset(self) -> None:
        """Back to the identity."""
        self.mean.zero_()
        self.matrix.copy_(torch.eye(self.matrix.shape[0]))

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        """Unit descriptors ``(..., D)`` -> projected unit descriptors ``(..., D)``, same dtype."""
        if not self.active:
            return desc
        m = self.matrix.to(desc.device)
        mu = self.mean.to(desc.device)
        flat = desc.float().reshape(-1, m.shape[1])
        # (d - mean) @ M^T = d @ M^T - M mean: one matrix product with the mean in its bias,
        # then the rows scaled to unit norm (as F.normalize, eps 1e-12): in place at
        # inference, out of place when autograd needs the product (training)
        out = torch.addmm(torch.mv(m, mu).neg(), flat, m.t())
        norm = torch.linalg.vector_norm(out, dim=1, keepdim=True).clamp_min(1e-12)
        out = out / norm if torch.is_grad_enabled() and out.requires_grad else out.div_(norm)
        return out.reshape(desc.shape).to(desc.dtype)


def fit_whitening(
    desc1: np.ndarray,
    desc2: np.ndarray,
    descriptors: np.ndarray,
    shrink: float = 0.1,
    spread_power: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the projection of :class:`DescriptorWhitening`.

    Args:
        desc1, desc2: ``(P, D)`` descriptors of ``P`` matching pairs (the same ground point
            seen in two images); ``desc1[i] <-> desc2[i]``.
        descriptors: ``(N, D)`` descriptors of all keypoints, for the mean and the spread.
        shrink: weight in [0, 1) of the identity (scaled to the covariance's mean variance)
            mixed into the pair-difference covariance.
        spread_power: exponent in [0, 1] of the spread of the whitened descriptors; 0 = plain
            whitening of the pair differences (``matrix`` is then symmetric).

    Returns:
        ``(mean (D,), matrix (D, D))`` float32.

    Raises:
        ValueError: fewer pairs than twice the dimension, mismatched shapes, identical pair
            descriptors or bad ``shrink`` / ``spread_power``.
    """
    a = np.asarray(desc1, np.float64)
    b = np.asarray(desc2, np.float64)
    x = np.asarray(descriptors, np.float64)
    if a.ndim != 2 or a.shape != b.shape or x.ndim != 2 or x.shape[1] != a.shape[1]:
        raise ValueError("desc1, desc2 must be (P, D) and descriptors (N, D)")
    dim = a.shape[1]
    if len(a) < 2 * dim:
        raise ValueError(f"whitening needs at least {2 * dim} matching pairs, got {len(a)}")
    if not 0.0 <= shrink < 1.0:
        raise ValueError("shrink must be in [0, 1)")
    if not 0.0 <= spread_power <= 1.0:
        raise ValueError("spread_power must be in [0, 1]")
    diff = a - b
    diff -= diff.mean(axis=0)
    cov = diff.T @ diff / (len(diff) - 1)
    cov = (1.0 - shrink) * cov + shrink * np.trace(cov) / dim * np.eye(dim)
    if not np.all(np.isfinite(cov)) or np.trace(cov) <= 0:
        raise ValueError("the matching pairs' descriptors do not differ: nothing to whiten")
    matrix = _sym_power(cov, -0.5)
    mean = x.mean(axis=0)
    if spread_power:
        y = (x - mean) @ matrix.T
        spread = y.T @ y / max(len(y) - 1, 1)
        matrix = _sym_power(spread, spread_power) @ matrix
    return mean.astype(np.float32), matrix.astype(np.float32)


def _sym_power(c: np.ndarray, power: float) -> np.ndarray:
    """``c^power`` of a symmetric positive semi-definite ``c`` (eigenvalues floored at 1e-9 of
    the largest)."""
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, 1e-9 * w.max())
    return (v * w**power) @ v.T
