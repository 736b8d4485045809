"""Fast-R2D2 and R2D2 (Quad-L2Net) networks, written from the method of Revaud et al. 2019.

An L2-Net-style fully convolutional stack keeps the input resolution by replacing strides
with dilations. Its last 8x8 convolution is replaced by three dilated 2x2 convolutions. Each
pixel gets a 128-d L2-normalized descriptor. Two 1x1 convolutions over the squared
(un-normalized) features give the repeatability map (where keypoints are) and the reliability
map (where descriptors can be trusted).

The Fast variant pools by 2 after the third convolution, runs the remaining layers at a
quarter of the pixels with halved dilations (same receptive field in input pixels) and
upsamples the outputs back to the input size. The pooling is part of the architecture config
(``pool``): sarreg's own Fast-R2D2 models average-pool (``'avg'``, the default); the networks
published with the paper max-pool (``'max'``, set by
:func:`sarreg.model.checkpoint.import_naver`).

Shapes: input ``(B, C, H, W)`` float32; outputs at ``(H, W)``:
``descriptors (B, D, H, W)`` unit-norm along D, ``repeatability`` and ``reliability``
``(B, 1, H, W)`` in (0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sarreg.model.whitening import DescriptorWhitening

ARCHITECTURES = ("fast_r2d2", "r2d2")
#: full-resolution pixels per strip of the Fast variant's stem at inference (see
#: ``R2D2Net.low_res_features``): its convolutions give 32, 32 and 64 channels at full
#: resolution (about 400 MB at 1024 x 1024 at once, about 100 MB per strip of this size)
STEM_STRIP_PIXELS = 1 << 18
#: context rows above and below each stem strip: more than the stem's reach (three 3x3
#: convolutions: 3 rows), even (pooling alignment)
STEM_HALO = 4
#: 2x2 pooling of the Fast variant after its third convolution: 'avg' (sarreg's models) or
#: 'max' (the networks published with the paper); no effect for 'r2d2', which does not pool
POOLINGS = ("avg", "max")
#: rows per step of the score heads of ``R2D2Net.dense_maps`` (low-resolution rows for the
#: Fast variant's head terms, twice as many output rows to combine them): small enough that
#: a step's temporaries (about ``4 * dim * rows * W`` bytes) stay in the CPU caches, which
#: measured 15 % less CPU time for the heads than 256 rows at 1024 x 1024
HEAD_CHUNK_ROWS = 32


@dataclass(frozen=True)
class ConvSpec:
    """One convolution block: conv -> (batch norm) -> (ReLU) -> (2x2 pool of kind ``pool``)."""

    out_channels: int
    kernel: int
    dilation: int
    bn: bool = True
    relu: bool = True
    pool_after: bool = False
    pool: str = "avg"


def layer_specs(
    arch: str, mchan: int = 4, dim: int = 128, relu22: bool = False, pool: str = "avg"
) -> list[ConvSpec]:
    """The convolution stack of ``arch`` ('fast_r2d2' or 'r2d2') at width ``mchan``.

    Channel widths are 8, 8, 16, 16, 32, 32, 32, 32 times ``mchan``, then ``dim``.
    Dilations double where the original L2-Net had a stride of 2; the Fast variant starts the
    doubling one step later because its pooling (``pool``: 'avg' or 'max', 2x2) already
    halves the resolution.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    if pool not in POOLINGS:
        raise ValueError(f"unknown pooling {pool!r}; expected one of {POOLINGS}")
    if mchan < 1 or dim < 1:
        raise ValueError("mchan and dim must be positive")
    c1, c2, c3 = 8 * mchan, 16 * mchan, 32 * mchan
    if arch == "fast_r2d2":
        d = [1, 1, 1, 1, 1, 2, 2, 4, 8]
        pools = [False, False, True] + [False] * 6
    else:
        d = [1, 1, 1, 2, 2, 4, 4, 8, 16]
        pools = [False] * 9
    outs = [c1, c1, c2, c2, c3, c3, c3, c3, dim]
    kernels = [3] * 6 + [2] * 3
    specs = []
    for i in range(9):
        last = i == 8
        relu = not last and (i < 6 or relu22)
        specs.append(
            ConvSpec(
                outs[i], kernels[i], d[i], bn=not last, relu=relu, pool_after=pools[i], pool=pool
            )
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
        self.pool = spec.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.conv(x))

    def inference_forward(
        self, x: torch.Tensor, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`forward` with channels-last weights and an eval-mode batch norm folded in.

        ``offset`` is the stem's input-offset kernel ``(O, 1, k, k)`` (see ``R2D2Net``):
        ``conv(ones; offset)`` is subtracted after the convolution.
        """
        conv = self.conv
        weight, bias = conv.weight, conv.bias
        post = self.post
        if self.bn is not None and not self.bn.training and self.bn.running_var is not None:
            scale = (self.bn.running_var.double() + self.bn.eps).rsqrt()
            weight = (weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype)
            bias = ((bias.double() - self.bn.running_mean.double()) * scale).to(weight.dtype)
            if offset is not None:
                offset = (offset.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype)
            post = self._post_without_bn
        weight = weight.contiguous(memory_format=torch.channels_last)
        h, w = x.shape[-2:]
        borders = None
        if offset is not None:
            borders = _offset_borders(offset, conv, h, w, x)
            if borders is not None:  # interior offset folded into the bias
                bias = bias - borders[0]
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        if borders is not None:
            _subtract_offset_borders_(y, borders[1], conv.padding)
        elif offset is not None:
            y = y - _offset_map(offset, conv, h, w, x)
        return post(y)

    def _post_without_bn(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`post` for a batch norm folded into the convolution: ReLU and pooling."""
        if self.relu:
            x = F.relu(x, inplace=True)
        if self.pool_after:
            x = self._pool(x)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """2x2 pooling with stride 2 (floor: an odd last row/column is dropped)."""
        return F.max_pool2d(x, 2) if self.pool == "max" else F.avg_pool2d(x, 2)

    def post(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the convolution: batch norm, ReLU (in place) and pooling."""
        if self.bn is not None:
            x = self.bn(x)
        if self.relu:
            x = F.relu(x, inplace=True)
        if self.pool_after:
            x = self._pool(x)
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
        pool: the Fast variant's 2x2 pooling, 'avg' (sarreg's models) or 'max' (the
            networks published with the paper); ignored by 'r2d2'.
    """

    def __init__(
        self,
        arch: str = "fast_r2d2",
        in_channels: int = 1,
        mchan: int = 4,
        dim: int = 128,
        relu22: bool = False,
        input_offset: bool = False,
        pool: str = "avg",
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
            "pool": pool,
        }
        specs = layer_specs(arch, mchan=mchan, dim=dim, relu22=relu22, pool=pool)
        blocks = []
        cin = in_channels
        for spec in specs:
            blocks.append(ConvBlock(cin, spec))
            cin = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.reliability_head = nn.Conv2d(dim, 2, 1)
        self.repeatability_head = nn.Conv2d(dim, 1, 1)
        #: inference-time descriptor projection (identity until fitted; see
        #: :mod:`sarreg.model.whitening`), applied by :meth:`descriptors_at` and
        #: :meth:`descriptors_around`, not by :meth:`forward`
        self.whitening = DescriptorWhitening(dim)
        if input_offset:
            stem, *_ = specs
            k = stem.kernel
            self.register_buffer("input_offset", torch.zeros(stem.out_channels, 1, k, k))
        else:
            self.input_offset = None

    def low_res_features(
        self, x: torch.Tensor, *, inference: bool = False, strip_pixels: int = STEM_STRIP_PIXELS
    ) -> torch.Tensor:
        """Raw descriptor features before the final upsampling, ``(B, dim, h, w)``.

        ``(h, w) = (H, W)`` for 'r2d2'; ``(H // 2, W // 2)`` for 'fast_r2d2'.

        Args:
            x: image batch ``(B, in_channels, H, W)``.
            inference: run the convolutions on activations and weights in
                ``torch.channels_last`` memory format, with eval-mode batch norms folded into
                the convolutions (same numbers up to float32 rounding, several times faster on
                CPU; batch norms in training mode are applied as usual). The result is then
                channels-last: ``result.permute(0, 2, 3, 1)`` is a contiguous
                ``(B, h, w, dim)`` view. Used by :meth:`dense_maps`; training keeps the
                default.
            strip_pixels: with ``inference``, the Fast variant's full-resolution layers run on
                horizontal strips of about this many pixels when the image has more than
                twice as many (:meth:`_stem_in_strips`: bounded memory, same numbers);
                0 = the whole image at once.
        """
        if not inference:
            h, w = x.shape[-2:]
            for i, block in enumerate(self.blocks):
                if i == 0 and self.input_offset is not None:
                    x = block.post(
                        block.conv(x) - _offset_map(self.input_offset, block.conv, h, w, x)
                    )
                else:
                    x = block(x)
            return x
        x = _channels_last(x)
        start = 0
        stem = _stem_end(self.blocks)
        if stem is not None and strip_pixels and x.shape[-2] * x.shape[-1] > 2 * strip_pixels:
            x = self._stem_in_strips(x, stem, strip_pixels)
            start = stem
        for i, block in enumerate(self.blocks):
            if i < start:
                continue
            offset = self.input_offset if i == 0 else None
            x = _channels_last(block.inference_forward(x, offset))
        return x

    def _stem_in_strips(self, x: torch.Tensor, stem: int, strip_pixels: int) -> torch.Tensor:
        """Blocks ``0 .. stem - 1`` (the full-resolution convolutions and the 2x2 pooling of
        the Fast variant) on horizontal strips of ``x`` ``(B, C, H, W)``, each with
        :data:`STEM_HALO` rows of context above and below, stitched into the pooled
        ``(B, C', H // 2, W // 2)`` channels-last result: only one strip's full-resolution
        activations are held at a time. The same numbers as the whole image at once (the
        stem's 3x3 convolutions reach fewer rows than the halo; up to float32 rounding)."""
        b, _, h, w = x.shape
        rows = max(16, int(strip_pixels) // max(1, w))
        rows -= rows % 2
        out = None
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, e = max(0, r0 - STEM_HALO), min(h, r1 + STEM_HALO)  # a is even (r0 is)
            y = x[:, :, a:e]
            for i in range(stem):
                offset = self.input_offset if i == 0 else None
                y = _channels_last(self.blocks[i].inference_forward(y, offset))
            if out is None:
                out = torch.empty(
                    (b, y.shape[1], h // 2, y.shape[-1]),
                    dtype=y.dtype,
                    device=y.device,
                    memory_format=torch.channels_last,
                )
            p0, p1 = r0 // 2, min(r1 // 2, h // 2)
            out[:, :, p0:p1] = y[:, :, p0 - a // 2 : p1 - a // 2]
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalized) descriptor features at input resolution, ``(B, dim, H, W)``."""
        h, w = x.shape[-2:]
        return upsample_features(self.low_res_features(x), (h, w))

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

    def dense_maps(self, x: torch.Tensor, chunk_rows: int = HEAD_CHUNK_ROWS) -> DenseMaps:
        """Inference: full-resolution score maps and low-resolution descriptor features.

        Gives the same repeatability and reliability as :meth:`forward` (up to float32
        rounding, about 1e-6) without building the ``(B, dim, H, W)`` upsampled feature
        tensor. The backbone runs in channels-last memory format. For 'r2d2' the heads run
        directly on the features, ``chunk_rows`` rows at a time. For 'fast_r2d2' the heads,
        quadratic in the bilinearly upsampled features, are expanded into products of
        neighbouring low-resolution features (see :func:`_quadratic_head_terms`) and combined
        at full resolution with the bilinear weights (:func:`_combine_head_terms`): exact, and
        a few 3-channel maps instead of ``dim`` channels at full resolution. Descriptors are
        sampled afterwards at keypoints with :meth:`descriptors_at`. Runs under
        ``torch.inference_mode()`` in the network's current mode: call ``eval()`` first
        (``load_checkpoint`` does).

        Args:
            x: image batch ``(B, C, H, W)`` float32 (``(H, W)`` and ``(B, H, W)`` are accepted
                too). A single-channel input is repeated when the network takes 3 channels.
            chunk_rows: rows per head evaluation; bounds the temporary memory at about
                ``4 * dim * chunk_rows * W`` bytes per image.

        Returns:
            :class:`DenseMaps` with contiguous ``repeatability`` and ``reliability``
            ``(B, 1, H, W)`` and the ``low_res`` features ``(B, dim, h, w)`` in channels-last
            memory format (call ``.contiguous()`` for the default layout).
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        x = _as_batch(x, self.in_channels)
        h, w = x.shape[-2:]
        if self.arch == "fast_r2d2" and (h < 2 or w < 2):
            raise ValueError(f"fast_r2d2 needs images of at least 2x2 pixels, got {h}x{w}")
        with torch.inference_mode():
            low = self.backbone(x)  # channels-last
            weight, bias = self._head_weights()
            if low.shape[-2:] == (h, w):  # 'r2d2': heads directly, in strips
                logits = low.new_empty((low.shape[0], 3, h, w))
                for r0 in range(0, h, chunk_rows):
                    r1 = min(h, r0 + chunk_rows)
                    strip = low[:, :, r0:r1].permute(0, 2, 3, 1)  # (B, n, w, dim)
                    logits[:, :, r0:r1] = ((strip * strip) @ weight.t() + bias).permute(0, 3, 1, 2)
            else:  # 'fast_r2d2': exact expansion of the heads on upsampled features
                terms = _quadratic_head_terms(low, weight, bias, chunk_rows=chunk_rows)
                logits = _combine_head_terms(terms, (h, w), chunk_rows=2 * chunk_rows)
            rep, rel = _scores_from_logits(logits)
        return DenseMaps(repeatability=rep, reliability=rel, low_res=low, image_shape=(h, w))

    def descriptor_maps(self, x: torch.Tensor) -> DenseMaps:
        """:meth:`dense_maps` without the score heads, for sampling descriptors only.

        The ``low_res`` features are the same numbers as :meth:`dense_maps` gives (same
        backbone); ``repeatability`` and ``reliability`` are empty ``(B, 1, 0, 0)`` tensors.
        Costs the backbone alone (the heads at full resolution are about a third more).

        Args:
            x: image batch ``(B, C, H, W)`` float32 (``(H, W)`` and ``(B, H, W)`` too).
        """
        x = _as_batch(x, self.in_channels)
        h, w = x.shape[-2:]
        if self.arch == "fast_r2d2" and (h < 2 or w < 2):
            raise ValueError(f"fast_r2d2 needs images of at least 2x2 pixels, got {h}x{w}")
        with torch.inference_mode():
            low = self.backbone(x)
            none = low.new_empty((low.shape[0], 1, 0, 0))
        return DenseMaps(repeatability=none, reliability=none, low_res=low, image_shape=(h, w))

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Inference backbone: :meth:`low_res_features` with ``inference=True`` (channels-last
        result), run by ONNX Runtime when a runtime is attached to this network and can run
        ``x`` now (:mod:`sarreg.model.runtime`; same numbers up to float32 rounding)."""
        from sarreg.model import runtime

        rt = runtime.backbone_for(self, x)
        if rt is not None:
            return rt(x)
        return self.low_res_features(x, inference=True)

    def _head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The two heads as one 1x1 map: weights ``(3, dim)``, bias ``(3,)``.

        Rows 0-1 are the reliability logits, row 2 the repeatability logit.
        """
        weight = torch.cat(
            [
                self.reliability_head.weight.reshape(2, self.dim),
                self.repeatability_head.weight.reshape(1, self.dim),
            ]
        )
        bias = torch.cat([self.reliability_head.bias, self.repeatability_head.bias])
        return weight, bias

    def descriptors_at(
        self, out: DenseMaps, xy: torch.Tensor, batch_index: int = 0
    ) -> torch.Tensor:
        """Matching descriptors ``(N, dim)``, unit norm, at pixel centres ``xy`` ``(N, 2)`` =
        (x, y): the sampled features of :func:`descriptors_at` through :attr:`whitening`.

        ``xy`` is in the pixel grid of the image given to :meth:`dense_maps` (centre of the
        top-left pixel at (0, 0)); it may be a numpy array or a tensor, integer or fractional.
        Without a fitted whitening, at integer positions the result equals :meth:`forward`'s
        descriptors at that pixel; between pixels the low-resolution features are
        interpolated bilinearly (the same formula extended continuously). Points must lie in
        ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
        """
        with torch.inference_mode():
            return self.whitening(descriptors_at(out, xy, batch_index=batch_index))

    def descriptors_around(
        self, out: DenseMaps, xy, radius: int, batch_index: int = 0
    ) -> torch.Tensor:
        """Matching descriptors ``(N, (2r + 1)^2, dim)`` around ``xy`` (see
        :func:`descriptors_around`), through :attr:`whitening` like :meth:`descriptors_at`."""
        with torch.inference_mode():
            return self.whitening(descriptors_around(out, xy, radius, batch_index=batch_index))


@dataclass
class DenseMaps:
    """Output of :meth:`R2D2Net.dense_maps` for a batch of ``B`` images of size ``(H, W)``.

    Attributes:
        repeatability: ``(B, 1, H, W)`` in (0, 1), as in :meth:`R2D2Net.forward`.
        reliability: ``(B, 1, H, W)`` in (0, 1), as in :meth:`R2D2Net.forward`.
        low_res: raw (un-normalized) features ``(B, dim, h, w)`` before upsampling, in
            channels-last memory format (``low_res.permute(0, 2, 3, 1)`` is contiguous).
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
        # (h, w, C): contiguous rows for the channels-last features dense_maps returns
        hwc = low.permute(1, 2, 0)
        fx, fy = fx[:, None], fy[:, None]
        top = hwc[y0, x0] * (1 - fx) + hwc[y0, x1] * fx
        bottom = hwc[y1, x0] * (1 - fx) + hwc[y1, x1] * fx
        feats = top * (1 - fy) + bottom * fy
        return F.normalize(feats, p=2, dim=1)


def descriptors_around(out: DenseMaps, xy, radius: int, batch_index: int = 0) -> torch.Tensor:
    """Unit-norm descriptors ``(N, (2r + 1)^2, dim)`` at the integer offsets ``(dx, dy)`` in
    ``[-r, r]^2`` (row-major: dy outer, dx inner) around pixel centres ``xy`` ``(N, 2)``.

    The same numbers as :func:`descriptors_at` at ``xy + (dx, dy)`` clamped to the image,
    computed from one block of low-resolution features per point (separable bilinear
    interpolation) instead of four gathers per neighbour.
    """
    low = out.low_res[batch_index]
    h, w = out.image_shape
    dim = low.shape[0]
    pts = torch.as_tensor(xy, dtype=torch.float64).reshape(-1, 2)
    n, k = pts.shape[0], 2 * radius + 1
    if n == 0:
        return low.new_zeros((0, k * k, dim))
    off = torch.arange(-radius, radius + 1, dtype=torch.float64)
    hwc = low.permute(1, 2, 0)  # (h, w, C), contiguous rows for channels-last features

    def axis_taps(pos: torch.Tensor, size: int, in_size: int):
        p = (pos[:, None] + off[None]).clamp(0, size - 1)  # (N, k)
        i0, i1, f = _source_taps(p.reshape(-1), size, in_size)
        i0, i1, f = i0.reshape(n, k), i1.reshape(n, k), f.reshape(n, k)
        base = i0[:, :1]
        return i0 - base, i1 - base, f, base[:, 0]

    x0, x1, fx, bx = axis_taps(pts[:, 0], w, low.shape[-1])
    y0, y1, fy, by = axis_taps(pts[:, 1], h, low.shape[-2])
    bw = int(x1.max()) + 1  # i1 >= i0: the block spans the second taps
    bh = int(y1.max()) + 1
    with torch.inference_mode():
        dev = low.device
        cols = (bx[:, None] + torch.arange(bw)).clamp(max=low.shape[-1] - 1).to(dev)
        rows = (by[:, None] + torch.arange(bh)).clamp(max=low.shape[-2] - 1).to(dev)
        block = hwc[rows[:, :, None], cols[:, None, :]]  # (N, bh, bw, C)
        # bilinear weights as small (N, k, block) matrices: two non-zeros per row
        wx = torch.zeros((n, k, bw), dtype=low.dtype, device=dev)
        wx.scatter_add_(2, x0.to(dev)[..., None], (1 - fx).to(dev, low.dtype)[..., None])
        wx.scatter_add_(2, x1.to(dev)[..., None], fx.to(dev, low.dtype)[..., None])
        wy = torch.zeros((n, k, bh), dtype=low.dtype, device=dev)
        wy.scatter_add_(2, y0.to(dev)[..., None], (1 - fy).to(dev, low.dtype)[..., None])
        wy.scatter_add_(2, y1.to(dev)[..., None], fy.to(dev, low.dtype)[..., None])
        along_x = torch.einsum("nkb,nhbc->nhkc", wx, block)  # (N, bh, k, C)
        feats = torch.einsum("njh,nhkc->njkc", wy, along_x)  # (N, k, k, C)
        return F.normalize(feats.reshape(n, k * k, dim), p=2, dim=2)


def _upsampling_scale(out_size: int, in_size: int) -> float:
    """Source pixels per output pixel of the feature upsampling along one axis.

    Fast-R2D2 pools by 2 (floor), so an axis of ``2n`` or ``2n + 1`` pixels has ``n``
    low-resolution pixels, each covering input pixels ``2i, 2i + 1``: the scale is exactly 1/2
    for both (``n / out_size`` would stretch odd axes and shift points by up to 0.5 px).
    """
    if out_size in (2 * in_size, 2 * in_size + 1):
        return 0.5
    return in_size / out_size


def upsample_features(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of features ``(B, C, h, w)`` to ``size`` = ``(H, W)``.

    ``F.interpolate(..., align_corners=False)`` at the scale of :func:`_upsampling_scale`:
    for an odd ``H = 2h + 1`` the last row (beyond the last low-resolution centre) repeats
    the row before, as the clamped bilinear rule gives. Identity when the sizes agree.
    """
    h, w = int(size[0]), int(size[1])
    hl, wl = low.shape[-2:]
    if (hl, wl) == (h, w):
        return low
    # per axis: an exact 2x upsampling (then one replicated line for odd sizes), or the size
    h2 = 2 * hl if _upsampling_scale(h, hl) == 0.5 else h
    w2 = 2 * wl if _upsampling_scale(w, wl) == 0.5 else w
    up = F.interpolate(low, size=(h2, w2), mode="bilinear", align_corners=False)
    if (h2, w2) != (h, w):
        up = F.pad(up, (0, w - w2, 0, h - h2), mode="replicate")
    return up


def _source_taps(
    pos: torch.Tensor, out_size: int, in_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps of output positions ``pos`` (float64) on an ``in_size`` axis.

    The rule of :func:`upsample_features`: source = max((pos + 0.5) * scale - 0.5, 0) with
    the scale of :func:`_upsampling_scale`, clamped to the last source pixel; returns
    (i0, i1, frac).
    """
    scale = _upsampling_scale(out_size, in_size)
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


def _stem_end(blocks) -> int | None:
    """Number of blocks up to and including the first pooling one (the Fast variant's
    full-resolution stem), or None when none pools or a stem block is not a 3x3 convolution
    of dilation 1 (its reach would exceed :data:`STEM_HALO`)."""
    reach = 0
    for i, block in enumerate(blocks):
        conv = block.conv
        reach += (conv.kernel_size[0] - 1) // 2 * conv.dilation[0]
        if reach >= STEM_HALO or conv.stride != (1, 1):
            return None
        if block.pool_after:
            return i + 1
    return None


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory format, also when it has one channel.

    ``contiguous(memory_format=...)`` leaves a one-channel tensor as it is (it counts as
    channels-last already), and convolutions then keep the default layout; here the strides
    are set explicitly.
    """
    if x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def _scores_from_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeatability and reliability ``(B, 1, H, W)`` from head logits ``(B, 3, H, W)``.

    Channels 0-1 are the reliability logits (softmax, channel 1 kept), channel 2 the
    repeatability logit (``softplus / (1 + softplus)``), as in :meth:`R2D2Net.heads`.
    """
    reliability = torch.softmax(logits[:, 0:2], dim=1)[:, 1:2].contiguous()
    ur = F.softplus(logits[:, 2:3])
    return (ur / (1.0 + ur)).contiguous(), reliability


def _quadratic_head_terms(
    low: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk_rows: int = 256
) -> torch.Tensor:
    """Low-resolution terms of the heads applied to squared, bilinearly upsampled features.

    Bilinear upsampling (``align_corners=False``) gives ``u(y, x) = sum_p a_p f_p`` over the
    source pixels ``p`` = ``(i0, j0), (i0, j1), (i1, j0), (i1, j1)`` with weights ``a`` =
    ``(1-ay)(1-ax), (1-ay)ax, ay(1-ax), ay ax`` (``i1 = min(i0 + 1, h - 1)``, same for
    ``j1``), so a head ``b_k + sum_c w_kc u_c^2`` equals ``b_k + sum_{p,q} a_p a_q G_k(p, q)``
    with ``G_k(p, q) = sum_c w_kc f_c(p) f_c(q)``. Grouped by their weights, which factor
    into a row part ``ry = ((1-ay)^2, ay^2, 2 ay (1-ay))`` and a column part ``cx`` (same in
    x), and indexed by ``(i0, j0) = (i, j)``, the nine terms are (with ``f`` replicate-padded
    by one row and column, which reproduces the clamped ``i1``/``j1``)::

        T[0, 0] = G(ij, ij)          T[0, 1] = G(ij+1, ij+1)      T[0, 2] = G(ij, ij+1)
        T[1, 0] = G(i+1j, i+1j)      T[1, 1] = G(i+1j+1, i+1j+1)  T[1, 2] = G(i+1j, i+1j+1)
        T[2, 0] = G(ij, i+1j)        T[2, 1] = G(ij+1, i+1j+1)
        T[2, 2] = (G(ij, i+1j+1) + G(ij+1, i+1j)) / 2

    and ``head_k = sum_{r,c} ry_r cx_c (T[r, c, k] + b_k)`` because the weights ``ry_r cx_c``
    sum to 1; the returned terms include ``b_k`` (see :func:`_combine_head_terms`). Four
    products of neighbouring features are computed per pixel (self, right, down and the sum
    over the two diagonals), each reduced over ``D`` at once by a matmul with the head weights.

    Args:
        low: features ``(B, D, h, w)`` (channels-last is read fastest).
        weight: head weights ``(K, D)``.
        bias: head biases ``(K,)``.
        chunk_rows: low-resolution rows per step; temporaries are about ``12 * D * n * w``
            bytes for ``n = chunk_rows``.

    Returns:
        ``(B, h, w, 3, 3, K)`` tensor ``T[b, i, j, r, c, k] + bias[k]``.
    """
    b, d, h, w = low.shape
    k = weight.shape[0]
    feats = low.permute(0, 2, 3, 1)  # (B, h, w, D)
    wt = weight.t().to(low.dtype)  # (D, K)
    half_wt = 0.5 * wt
    bias = bias.to(low.dtype)
    # G of each pixel with itself, its right and lower neighbours and across the two diagonals
    # (that pair halved, as it enters T[2, 2] in one piece), on features replicate-padded by
    # one row and column: a clamped neighbour is the pixel itself. One more row of s_pad and
    # r_pad is the bottom padding.
    s_pad = low.new_empty((b, h + 1, w + 1, k))
    r_pad = low.new_empty((b, h + 1, w, k))
    d_pad = low.new_empty((b, h, w + 1, k))
    x_mid = low.new_empty((b, h, w, k))
    step = max(1, min(chunk_rows, h))
    # scratch buffers, reused: fresh large tensors cost page faults
    pad = low.new_empty((step + 1, w + 1, d))
    buf = low.new_empty(step * (w + 1) * d)

    def store(p: torch.Tensor, q: torch.Tensor, dst: torch.Tensor, mat: torch.Tensor) -> None:
        """``dst = (p * q) @ mat`` for ``p, q`` ``(n, m, D)``; ``dst`` ``(n, m, K)`` contiguous."""
        prod = torch.mul(p, q, out=_scratch(buf, p.shape))
        torch.mm(prod.view(-1, d), mat, out=dst.view(-1, k))

    for bi in range(b):
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            n = r1 - r0
            avail = min(r1 + 1, h) - r0  # n + 1 rows, or n at the bottom of the image
            pad[:avail, :w] = feats[bi, r0 : r0 + avail]
            if avail == n:
                pad[n, :w] = feats[bi, h - 1]
            pad[: n + 1, w] = pad[: n + 1, w - 1]
            top, bot = pad[:n], pad[1 : n + 1]
            store(top, top, s_pad[bi, r0:r1], wt)
            store(top[:, :-1], top[:, 1:], r_pad[bi, r0:r1], wt)
            store(top, bot, d_pad[bi, r0:r1], wt)
            prod = torch.mul(top[:, :-1], bot[:, 1:], out=_scratch(buf, (n, w, d)))
            prod.addcmul_(top[:, 1:], bot[:, :-1])
            torch.mm(prod.view(-1, d), half_wt, out=x_mid[bi, r0:r1].view(-1, k))
    s_pad[:, h] = s_pad[:, h - 1]
    r_pad[:, h] = r_pad[:, h - 1]
    terms = torch.stack(
        [
            s_pad[:, :h, :w],
            s_pad[:, :h, 1:],
            r_pad[:, :h],
            s_pad[:, 1:, :w],
            s_pad[:, 1:, 1:],
            r_pad[:, 1:],
            d_pad[:, :, :w],
            d_pad[:, :, 1:],
            x_mid,
        ],
        dim=3,
    )
    terms += bias  # the weights ry_r cx_c sum to 1
    return terms.view(b, h, w, 3, 3, k)


def _combine_head_terms(
    terms: torch.Tensor, size: tuple[int, int], chunk_rows: int = 256
) -> torch.Tensor:
    """Full-resolution head logits ``(B, K, H, W)`` from :func:`_quadratic_head_terms`.

    ``logit_k(y, x) = sum_{r,c} ry_r(y) cx_c(x) T[i0(y), j0(x), r, c, k]`` (the biases are in
    ``T``): the row taps are gathered and mixed first (at the low width), then the columns.

    Args:
        terms: ``(B, h, w, 3, 3, K)``.
        size: output ``(H, W)``.
        chunk_rows: output rows per step (temporaries about ``220 * chunk_rows * W`` bytes).

    Returns:
        ``(B, K, H, W)`` logits (a permuted view of a contiguous ``(B, H, W, K)`` tensor).
    """
    b, h, w, _, _, k = terms.shape
    out_h, out_w = size
    dev, dtype = terms.device, terms.dtype
    j0, _, fx = _bilinear_taps(out_w, w, dev)
    fx = fx.to(dtype)
    cx = torch.stack([(1 - fx) ** 2, fx**2, 2 * fx * (1 - fx)], dim=1).view(1, 1, out_w, 3, 1)
    logits = terms.new_empty((b, out_h, out_w, k))
    step = max(1, min(chunk_rows, out_h))
    # scratch buffers, reused across steps (fresh large tensors cost page faults)
    gathered = terms.new_empty(b * step * w * 9 * k)
    rowmix = terms.new_empty(b * step * w * 3 * k)
    cols = terms.new_empty(b * step * out_w * 3 * k)
    for r0 in range(0, out_h, step):
        r1 = min(out_h, r0 + step)
        n = r1 - r0
        i0, _, fy = _bilinear_taps(out_h, h, dev, r0, r1)
        fy = fy.to(dtype)
        ry = torch.stack([(1 - fy) ** 2, fy**2, 2 * fy * (1 - fy)], dim=1).view(1, n, 1, 3, 1, 1)
        g = torch.index_select(terms, 1, i0, out=_scratch(gathered, (b, n, w, 3, 3, k)))
        r = torch.sum(g.mul_(ry), dim=3, out=_scratch(rowmix, (b, n, w, 3, k)))
        c = torch.index_select(r, 2, j0, out=_scratch(cols, (b, n, out_w, 3, k)))
        torch.sum(c.mul_(cx), dim=3, out=logits[:, r0:r1])
    return logits.permute(0, 3, 1, 2)


def _scratch(buf: torch.Tensor, shape: tuple | torch.Size) -> torch.Tensor:
    """A contiguous ``shape`` view on the start of the flat buffer ``buf``."""
    numel = 1
    for size in shape:
        numel *= size
    return buf[:numel].view(shape)


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


def _offset_borders(
    kernel: torch.Tensor, conv: nn.Conv2d, h: int, w: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`_offset_map` as an interior constant plus border corrections.

    Away from the zero padding, ``conv(ones)`` is the same everywhere; within ``pad`` of an
    edge it depends only on the distance to that edge. Returns ``(const (O,), delta (1, O,
    2 ph + 1, 2 pw + 1))`` where ``delta`` is ``conv(ones) - const`` on a small image whose
    rows/columns ``< p`` and ``> p`` stand for the first/last ``p`` rows/columns of the full
    image; None when the image is too small for that (use :func:`_offset_map`).
    """
    ph, pw = conv.padding
    small_h, small_w = ph + 1 + ph, pw + 1 + pw  # the interior row/column and p each side
    if h < small_h or w < small_w:
        return None
    small = _offset_map(kernel, conv, small_h, small_w, like)
    const = small[0, :, ph, pw]
    return const, small - const.view(1, -1, 1, 1)


def _subtract_offset_borders_(y: torch.Tensor, delta: torch.Tensor, pad: tuple) -> None:
    """Subtract the border part ``delta`` of :func:`_offset_borders` from ``y`` in place."""
    ph, pw = pad
    h, w = y.shape[-2:]
    if ph:
        cols = torch.cat(
            [
                torch.arange(pw),
                torch.full((w - 2 * pw,), pw, dtype=torch.long),
                torch.arange(pw + 1, 2 * pw + 1),
            ]
        ).to(y.device)
        y[:, :, :ph] -= delta[:, :, :ph].index_select(3, cols)
        y[:, :, h - ph :] -= delta[:, :, ph + 1 :].index_select(3, cols)
    if pw:
        y[:, :, ph : h - ph, :pw] -= delta[:, :, ph : ph + 1, :pw]
        y[:, :, ph : h - ph, w - pw :] -= delta[:, :, ph : ph + 1, pw + 1 :]


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
