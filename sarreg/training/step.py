"""One training forward pass and the R2D2 objective on a batch of pairs.

The network runs once on both images (``(2B, 1, H, W)``). The repeatability and reliability
heads run at full resolution exactly as in ``R2D2Net.forward``; descriptors are only sampled
where the AP loss needs them (see :mod:`sarreg.training.sampler`), which saves most of the
cost of the dense ``(B, 128, H, W)`` normalized descriptor tensor on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sarreg.model.r2d2 import R2D2Net, upsample_features
from sarreg.training.losses import (
    LossConfig,
    ap_reliability_loss,
    cosim_loss,
    peaky_loss,
    quantized_ap,
)
from sarreg.training.sampler import SamplerConfig, sample_ap

LOSS_NAMES = ("cosim", "peaky", "ap")


@dataclass
class Batch:
    """A batch of ``B`` pairs of ``(H, W)`` images (torch tensors on one device).

    Attributes:
        image1, image2: ``(B, 1, H, W)`` float32 in ``[0, 1]`` (preprocessed).
        mask1, mask2: ``(B, H, W)`` bool valid image content.
        field: ``(B, H, W, 2)`` float32 image-2 position of each image-1 pixel centre.
        valid: ``(B, H, W)`` bool usable ground truth.
        homography: ``(B, 3, 3)`` float64 image 1 -> image 2 pixel-centre transforms.
    """

    image1: torch.Tensor
    image2: torch.Tensor
    mask1: torch.Tensor
    mask2: torch.Tensor
    field: torch.Tensor
    valid: torch.Tensor
    homography: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Copy to ``device`` (non-blocking where possible)."""
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (
                    self.image1,
                    self.image2,
                    self.mask1,
                    self.mask2,
                    self.field,
                    self.valid,
                    self.homography,
                )
            )
        )

    @property
    def size(self) -> int:
        return int(self.image1.shape[0])


@dataclass
class TrainOutputs:
    """Network outputs for the training losses (images 1 and 2 of ``B`` pairs).

    Attributes:
        low1, low2: ``(B, D, h, w)`` raw low-resolution descriptor features.
        rep1, rep2, rel1, rel2: ``(B, 1, H, W)`` repeatability and reliability maps.
    """

    low1: torch.Tensor
    low2: torch.Tensor
    rep1: torch.Tensor
    rep2: torch.Tensor
    rel1: torch.Tensor
    rel2: torch.Tensor


def train_forward(net: R2D2Net, image1: torch.Tensor, image2: torch.Tensor) -> TrainOutputs:
    """Run ``net`` on both images at once; heads at full resolution as in ``forward``."""
    b = image1.shape[0]
    h, w = image1.shape[-2:]
    x = torch.cat([image1, image2], dim=0)
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    low = net.low_res_features(x)
    rep, rel = net.heads(upsample_features(low, (h, w)))
    rep, rel, low = rep.float(), rel.float(), low.float()
    return TrainOutputs(low[:b], low[b:], rep[:b], rep[b:], rel[:b], rel[b:])


def compute_losses(
    out: TrainOutputs,
    batch: Batch,
    loss_config: LossConfig = LossConfig(),
    sampler_config: SamplerConfig = SamplerConfig(),
    generator: torch.Generator | None = None,
    train_reliability: bool = True,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted R2D2 objective.

    With ``train_reliability=False`` the reliability enters the AP loss as a constant (see
    ``LossConfig.reliability_warmup``). ``project`` maps the sampled unit descriptors of the
    AP loss (``(B, N, D)``) before their similarities are taken, e.g. the network's
    descriptor whitening (``LossConfig.whitened``).

    Returns ``(total, parts)`` with ``parts`` holding the unweighted 'cosim', 'peaky' and
    'ap' losses plus diagnostics 'ap_mean' (mean AP of the queries, ``1 - ap_mean`` is the
    plain AP term weighted by ``w_ap_plain``) and 'rel_mean'.
    """
    lc = loss_config
    shape = tuple(batch.image1.shape[-2:])
    cos = cosim_loss(out.rep1, out.rep2, batch.field, batch.valid, n=lc.n)
    peaky = 0.5 * (
        peaky_loss(out.rep1, batch.mask1, n=lc.n, stride=lc.peaky_stride)
        + peaky_loss(out.rep2, batch.mask2, n=lc.n, stride=lc.peaky_stride)
    )
    s = sample_ap(
        out.low1,
        out.low2,
        out.rel1,
        batch.field,
        batch.valid,
        batch.mask2,
        shape,
        sampler_config,
        generator,
        project,
    )
    if s.scores.shape[0] == 0:
        ap_loss = out.rel1.sum() * 0.0
        ap_mean = out.rel1.new_tensor(0.0)
        ap_plain = ap_loss
    else:
        ap = quantized_ap(s.scores, s.labels, s.weights, lc.nq, lc.ap_min, lc.ap_max)
        rel = s.reliability if train_reliability else s.reliability.detach()
        ap_loss = ap_reliability_loss(ap, rel, lc.kappa).mean()
        ap_mean = ap.detach().mean()
        ap_plain = 1.0 - ap.mean()
    total = lc.w_cosim * cos + lc.w_peaky * peaky + lc.w_ap * ap_loss
    if lc.w_ap_plain:
        total = total + lc.w_ap_plain * ap_plain
    parts = {
        "cosim": cos,
        "peaky": peaky,
        "ap": ap_loss,
        "ap_mean": ap_mean,
        "rel_mean": out.rel1.detach().mean(),
        "queries": torch.tensor(float(s.scores.shape[0])),
    }
    return total, parts
