"""Fast-R2D2 and R2D2 (Quad-L2Net) networks, written from the method of Revaud et al. 2019.

An L2-Net-style fully convolutional stack keeps the input resolution by replacing strides
with dilations. Its last 8x8 convolution is replaced by three dilated 2x2 convolutions. Each
pixel gets a 128-d L2-normalized descriptor. Two 1x1 convolutions over the squared
(un-normalized) features give the repeatability map (where keypoints are) and the reliability
map (where descriptors can be trusted).

The Fast variant average-pools by 2 after the third convolution, runs the remaining layers at a
quarter of the pixels with halved dilations (same receptive field in input pixels) and
upsamples the outputs back to the input size.

Shapes: input ``(B, C, H, W)`` float32; outputs at ``(H, W)``:
``descriptors (B, D, H, W)`` unit-norm along D, ``repeatability`` and ``reliability``
``(B, 1, H, W)`` in (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("fast_r2d2", "r2d2")


@dataclass(frozen=True)
class ConvSpec:
    """One convolution block: conv -> (batch norm) -> (ReLU) -> (2x2 average pool)."""

    out_channels: int
    kernel: int
    dilation: int
    bn: bool = True
    relu: bool = True
    pool_after: bool = False


def layer_specs(arch: str, mchan: int = 4, dim: int = 128, relu22: bool = False) -> list[ConvSpec]:
    """The convolution stack of ``arch`` ('fast_r2d2' or 'r2d2') at width ``mchan``.

    Channel widths are 8, 8, 16, 16, 32, 32, 32, 32 times ``mchan``, then ``dim``.
    Dilations double where the original L2-Net had a stride of 2; the Fast variant starts the
    doubling one step later because its pooling already halves the resolution.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    if mchan < 1 or dim < 1:
        raise ValueError("mchan and dim must be positive")
    c1, c2, c3 = 8 * mchan, 16 * mchan, 32 * mchan
    if arch == "fast_r2d2":
        d = [1, 1, 1, 1, 1, 2, 2, 4, 8]
        pool = [False, False, True] + [False] * 6
    else:
        d = [1, 1, 1, 2, 2, 4, 4, 8, 16]
        pool = [False] * 9
    outs = [c1, c1, c2, c2, c3, c3, c3, c3, dim]
    kernels = [3] * 6 + [2] * 3
    specs = []
    for i in range(9):
        last = i == 8
        relu = not last and (i < 6 or relu22)
        specs.append(
            ConvSpec(outs[i], kernels[i], d[i], bn=not last, relu=relu, pool_after=pool[i])
        )
    return specs


class ConvBlock(nn.Module):
    """Dilated 'same' convolution with optional affine-free batch norm, ReLU and pooling."""

    def __init__(self, in_channels: int, spec: ConvSpec) -> None:
        super().__init__()
        pad = (spec.kernel - 1) * spec.dilation // 2
        self.conv = nn.Conv2d(
            in_channels, spec.out_channels, spec.kernel, padding=pad, dilation=spec.dilation
        )
        self.bn = nn.BatchNorm2d(spec.out_channels, affine=False) if spec.bn else None
        self.relu = spec.relu
        self.pool_after = spec.pool_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu:
            x = F.relu(x, inplace=True)
        if self.pool_after:
            x = F.avg_pool2d(x, 2)
        return x


class R2D2Net(nn.Module):
    """R2D2 network with confidence heads (repeatability + reliability).

    Args:
        arch: 'fast_r2d2' (pool by 2 after conv 3, upsample at the end) or 'r2d2'.
        in_channels: input channels (1 for SAR, 3 for RGB checkpoints).
        mchan: width multiplier (4 is the published width).
        dim: descriptor dimension.
        relu22: ReLU after the two inner 2x2 convolutions.
        input_offset: keep a per-tap offset kernel for the first convolution, used when an
            RGB checkpoint with input normalization is folded into one channel: the stem then
            computes ``conv(x) - conv(ones, offset)``, exact also at the zero-padded border.
    """

    def __init__(
        self,
        arch: str = "fast_r2d2",
        in_channels: int = 1,
        mchan: int = 4,
        dim: int = 128,
        relu22: bool = False,
        input_offset: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.in_channels = in_channels
        self.dim = dim
        specs = layer_specs(arch, mchan=mchan, dim=dim, relu22=relu22)
        blocks = []
        cin = in_channels
        for spec in specs:
            blocks.append(ConvBlock(cin, spec))
            cin = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.reliability_head = nn.Conv2d(dim, 2, 1)
        self.repeatability_head = nn.Conv2d(dim, 1, 1)
        if input_offset:
            k = specs[0].kernel
            self.register_buffer("input_offset", torch.zeros(specs[0].out_channels, 1, k, k))
        else:
            self.input_offset = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalized) descriptor features at input resolution, ``(B, dim, H, W)``."""
        h, w = x.shape[-2:]
        for i, block in enumerate(self.blocks):
            if i == 0 and self.input_offset is not None:
                x = block.conv(x) - _offset_map(self.input_offset, block.conv, h, w, x)
                if block.bn is not None:
                    x = block.bn(x)
                if block.relu:
                    x = F.relu(x, inplace=True)
                if block.pool_after:
                    x = F.avg_pool2d(x, 2)
            else:
                x = block(x)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        sq = feats * feats
        reliability = torch.softmax(self.reliability_head(sq), dim=1)[:, 1:2]
        ur = F.softplus(self.repeatability_head(sq))
        repeatability = ur / (1.0 + ur)
        return {
            "descriptors": F.normalize(feats, p=2, dim=1),
            "repeatability": repeatability,
            "reliability": reliability,
        }


def _offset_map(
    kernel: torch.Tensor, conv: nn.Conv2d, h: int, w: int, like: torch.Tensor
) -> torch.Tensor:
    """``conv(ones)`` with the stem's padding: the folded normalization offset per pixel."""
    ones = torch.ones(1, 1, h, w, dtype=like.dtype, device=like.device)
    return F.conv2d(ones, kernel.to(like.dtype), padding=conv.padding, dilation=conv.dilation)


def build_model(arch: str, **kwargs) -> R2D2Net:
    """Construct a network by architecture name (see ``ARCHITECTURES``)."""
    return R2D2Net(arch=arch, **kwargs)


def flops_per_pixel(
    arch: str = "fast_r2d2", in_channels: int = 1, mchan: int = 4, dim: int = 128
) -> float:
    """Multiply-adds x 2 per input pixel for one forward pass (convolutions only)."""
    total = 0.0
    area = 1.0
    cin = in_channels
    for spec in layer_specs(arch, mchan=mchan, dim=dim):
        total += 2.0 * cin * spec.out_channels * spec.kernel**2 * area
        cin = spec.out_channels
        if spec.pool_after:
            area /= 4.0
    total += 2.0 * dim * 3 * area
    return total
