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
        #: constructor arguments, as stored in checkpoints (``R2D2Net(**net.config)``)
        self.config = {
            "arch": arch,
            "in_channels": in_channels,
            "mchan": mchan,
            "dim": dim,
            "relu22": relu22,
            "input_offset": input_offset,
        }
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

    def low_res_features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw descriptor features before the final upsampling, ``(B, dim, h, w)``.

        ``(h, w) = (H, W)`` for 'r2d2'; ``(H // 2, W // 2)`` for 'fast_r2d2'.
        """
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
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalized) descriptor features at input resolution, ``(B, dim, H, W)``."""
        h, w = x.shape[-2:]
        x = self.low_res_features(x)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x

    def heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Repeatability and reliability ``(B, 1, H, W)`` from raw features ``(B, dim, H, W)``."""
        sq = feats * feats
        reliability = torch.softmax(self.reliability_head(sq), dim=1)[:, 1:2]
        ur = F.softplus(self.repeatability_head(sq))
        return ur / (1.0 + ur), reliability

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        repeatability, reliability = self.heads(feats)
        return {
            "descriptors": F.normalize(feats, p=2, dim=1),
            "repeatability": repeatability,
            "reliability": reliability,
        }

    def dense_maps(self, x: torch.Tensor, chunk_rows: int = 256) -> DenseMaps:
        """Inference: full-resolution score maps and low-resolution descriptor features.

        Gives the same repeatability and reliability as :meth:`forward` without holding the
        ``(B, dim, H, W)`` upsampled descriptor tensor: the heads run on bilinearly upsampled
        features ``chunk_rows`` output rows at a time. Descriptors are sampled afterwards at
        keypoints with :meth:`descriptors_at`. Runs under ``torch.inference_mode()`` in the
        network's current mode: call ``eval()`` first (``load_checkpoint`` does).

        Args:
            x: image batch ``(B, C, H, W)`` float32 (``(H, W)`` and ``(B, H, W)`` are accepted
                too). A single-channel input is repeated when the network takes 3 channels.
            chunk_rows: output rows per head evaluation; bounds memory at about
                ``4 * dim * chunk_rows * W`` bytes per image.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        x = _as_batch(x, self.in_channels)
        h, w = x.shape[-2:]
        with torch.inference_mode():
            low = self.low_res_features(x)
            rep = low.new_empty((low.shape[0], 1, h, w))
            rel = low.new_empty((low.shape[0], 1, h, w))
            if low.shape[-2:] == (h, w):
                for r0 in range(0, h, chunk_rows):
                    r1 = min(h, r0 + chunk_rows)
                    rep[:, :, r0:r1], rel[:, :, r0:r1] = self.heads(low[:, :, r0:r1])
            else:
                for r0 in range(0, h, chunk_rows):
                    r1 = min(h, r0 + chunk_rows)
                    rows = _bilinear_taps(h, low.shape[-2], low.device, r0, r1)
                    up = _upsample_block(low, rows, w)
                    rep[:, :, r0:r1], rel[:, :, r0:r1] = self.heads(up)
        return DenseMaps(repeatability=rep, reliability=rel, low_res=low, image_shape=(h, w))

    def descriptors_at(
        self, out: DenseMaps, xy: torch.Tensor, batch_index: int = 0
    ) -> torch.Tensor:
        """Unit-norm descriptors ``(N, dim)`` at pixel centres ``xy`` ``(N, 2)`` = (x, y).

        ``xy`` is in the pixel grid of the image given to :meth:`dense_maps` (centre of the
        top-left pixel at (0, 0)); it may be a numpy array or a tensor, integer or fractional.
        At integer positions the result equals :meth:`forward`'s descriptors at that pixel;
        between pixels the low-resolution features are interpolated bilinearly (the same
        formula extended continuously). Points must lie in ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
        """
        return descriptors_at(out, xy, batch_index=batch_index)


@dataclass
class DenseMaps:
    """Output of :meth:`R2D2Net.dense_maps` for a batch of ``B`` images of size ``(H, W)``.

    Attributes:
        repeatability: ``(B, 1, H, W)`` in (0, 1), as in :meth:`R2D2Net.forward`.
        reliability: ``(B, 1, H, W)`` in (0, 1), as in :meth:`R2D2Net.forward`.
        low_res: raw (un-normalized) features ``(B, dim, h, w)`` before upsampling.
        image_shape: ``(H, W)`` of the input.
    """

    repeatability: torch.Tensor
    reliability: torch.Tensor
    low_res: torch.Tensor
    image_shape: tuple[int, int]

    @property
    def scores(self) -> torch.Tensor:
        """Reliability x repeatability, ``(B, 1, H, W)``."""
        return self.repeatability * self.reliability


def descriptors_at(out: DenseMaps, xy, batch_index: int = 0) -> torch.Tensor:
    """Sample unit-norm descriptors ``(N, dim)`` at pixel centres ``xy`` ``(N, 2)``.

    See :meth:`R2D2Net.descriptors_at`. Returns float32 on the device of ``out.low_res``.
    """
    low = out.low_res[batch_index]
    h, w = out.image_shape
    pts = torch.as_tensor(xy, dtype=torch.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        return low.new_zeros((0, low.shape[0]))
    if not torch.isfinite(pts).all():
        raise ValueError("keypoint coordinates must be finite")
    x, y = pts[:, 0], pts[:, 1]
    if (x < -0.5).any() or (x > w - 0.5).any() or (y < -0.5).any() or (y > h - 0.5).any():
        raise ValueError(f"keypoints must lie inside the {w}x{h} image (x in [-0.5, W-0.5])")
    x0, x1, fx = _source_taps(x.clamp(0, w - 1), w, low.shape[-1])
    y0, y1, fy = _source_taps(y.clamp(0, h - 1), h, low.shape[-2])
    with torch.inference_mode():
        fx = fx.to(low.device, low.dtype)
        fy = fy.to(low.device, low.dtype)
        x0, x1, y0, y1 = (t.to(low.device) for t in (x0, x1, y0, y1))
        top = low[:, y0, x0] * (1 - fx) + low[:, y0, x1] * fx
        bottom = low[:, y1, x0] * (1 - fx) + low[:, y1, x1] * fx
        feats = top * (1 - fy) + bottom * fy
        return F.normalize(feats.t(), p=2, dim=1)


def _source_taps(
    pos: torch.Tensor, out_size: int, in_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps of output positions ``pos`` (float64) on an ``in_size`` axis.

    Same rule as ``F.interpolate(..., mode='bilinear', align_corners=False)`` with an output
    size: source = max((pos + 0.5) * in/out - 0.5, 0); returns (i0, i1, frac).
    """
    scale = in_size / out_size
    src = ((pos + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    return i0, i1, (src - i0).clamp(0.0, 1.0)


def _bilinear_taps(
    out_size: int, in_size: int, device: torch.device, start: int = 0, stop: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Taps for the integer output positions ``start .. stop - 1`` of an upsampled axis."""
    pos = torch.arange(start, out_size if stop is None else stop, dtype=torch.float64)
    i0, i1, frac = _source_taps(pos, out_size, in_size)
    return i0.to(device), i1.to(device), frac.to(device)


def _upsample_block(low: torch.Tensor, rows: tuple, out_width: int) -> torch.Tensor:
    """Bilinear upsampling of ``low`` ``(B, D, h, w)`` to the given output rows, full width.

    Rows are mixed explicitly at the low width; columns go through ``F.interpolate`` with the
    row count unchanged (an exact copy along rows), which uses the same column taps as a
    full-image upsampling.
    """
    r0, r1, fr = rows
    fr = fr.to(low.dtype).view(-1, 1)
    rowmix = low[:, :, r0] * (1 - fr) + low[:, :, r1] * fr  # (B, D, n_rows, w)
    return F.interpolate(
        rowmix, size=(rowmix.shape[-2], out_width), mode="bilinear", align_corners=False
    )


def _as_batch(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``(H, W)``, ``(B, H, W)`` or ``(B, C, H, W)`` -> ``(B, in_channels, H, W)``."""
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        if x.shape[1] == 1:
            x = x.expand(-1, in_channels, -1, -1)
        else:
            raise ValueError(f"network takes {in_channels} channels, input has {x.shape[1]}")
    return x


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
