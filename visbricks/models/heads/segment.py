"""Segmentation decoders, registered as heads: ``unet``, ``fpn``, ``deeplabv3plus``, ``fcn``.

Each takes the encoder's feature maps (strides 4–32, ``in_channels`` as the interface, as in
segmentation_models_pytorch) and returns ``{"logits": (N, num_classes, H, W)}`` at the input
size (bilinear upsampling of the decoder's finest map). Every decoder conv is a block from
:mod:`visbricks.models.blocks`, so ``model.head_args: {block: dwsep, attention: se}`` changes
them all; ``upsample: up_bilinear | up_transposed`` chooses the learned ×2 upsampling block.
Only the 1×1 class predictors are plain convolutions.

- ``unet`` (Ronneberger et al. 2015): :class:`~visbricks.models.decoders.UNetDecoder` with a
  skip connection at every encoder stride, continuing without skips down to ``out_stride``
  (smp's Unet ends at stride 1 the same way).
- ``fpn`` (semantic FPN, Kirillov et al. 2019): lateral 1×1 + top-down sum, then each level
  brought to stride 4 by (block + ×2 upsample) steps, summed, classified at stride 4.
- ``deeplabv3plus`` (Chen et al. 2018): ASPP on the coarsest map, upsampled to stride 4 and
  concatenated with a 1×1-reduced stride-4 skip, two blocks, classifier.
- ``fcn`` (FCN-8s, Long et al. 2015): block convs on the coarsest map (fc6/fc7), class score
  maps at strides 32, 16 and 8, fused coarse-to-fine by ×2 upsampling (a learned deconvolution
  with ``up_transposed``, as in the paper) and summed, then ×8 bilinear to the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import block_spec, build_block, build_upsample, is_upsampling
from ..decoders import UNetDecoder

UPSAMPLE_BLOCKS = ("up_bilinear", "up_transposed")


def _check_upsample(upsample: str) -> None:
    if upsample not in UPSAMPLE_BLOCKS or not is_upsampling(upsample):
        raise ConfigError(
            f"model.head_args.upsample must be one of {', '.join(UPSAMPLE_BLOCKS)}, "
            f"got {upsample!r}"
        )


def _up_spec(upsample: str, block_args: dict[str, Any] | None = None, **defaults: Any):
    """``(in, out) -> ×2 upsampling block`` with the options of ``block_args`` it accepts."""
    return lambda cin, cout: build_upsample(upsample, cin, cout, block_args, None, **defaults)


def _level(strides: list[int], stride: int, what: str) -> int:
    if stride not in strides:
        raise ConfigError(f"{what} needs encoder features at stride {stride}; got {strides}")
    return strides.index(stride)


def _steps(ratio: int) -> int:
    """How many ×2 upsamplings go from stride ``s`` to stride ``s / ratio``."""
    n = round(math.log2(ratio))
    if 2**n != ratio:
        raise ConfigError(f"strides must differ by powers of two, got a ratio of {ratio}")
    return n


class _SegHead(nn.Module):
    outputs = ("logits",)
    output_stride = 1  # per-pixel logits at the input size

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _logits(self, x: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        logits = self.classifier(self.dropout(x))
        if tuple(logits.shape[-2:]) != tuple(image_size):
            logits = F.interpolate(logits, size=image_size, mode="bilinear", align_corners=False)
        return {"logits": logits}


@HEADS.register("unet")
class UNetHead(_SegHead):
    """U-Net decoder (:class:`~visbricks.models.decoders.UNetDecoder`): from the coarsest map,
    ×2 ``upsample`` per level, concatenated with the encoder map of that stride (every stride
    the encoder has), fused by a block; levels finer than the encoder's finest stride have no
    skip. ``channels``: one int, or one per decoder level, finest first (for strides 4–32 and
    ``out_stride`` 2: levels at 2, 4, 8, 16); null: 32, 64, 96, ... from the finest level."""

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_classes: int,
        channels: int | list[int] | None = None,
        upsample: str = "up_bilinear",
        out_stride: int = 2,
        block: str = "conv",
        block_args: dict[str, Any] | None = None,
        attention: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        _check_upsample(upsample)
        if channels is None:
            levels = max(1, round(math.log2(max(strides) / out_stride)))
            channels = [32 * (i + 1) for i in range(levels)]
        decoder = UNetDecoder(
            in_channels,
            strides,
            channels,
            [out_stride],
            block=block,
            upsample=upsample,
            block_args=block_args,
            attention=attention,
        )
        super().__init__(decoder.out_channels[0], num_classes, dropout)
        self.decoder = decoder

    def forward(self, features: list[Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        return self._logits(self.decoder(features)[0], image_size)


@HEADS.register("fpn")
class FPNHead(_SegHead):
    """Semantic FPN: ``channels`` in the pyramid, ``seg_channels`` in the per-level scale heads,
    merged (summed) at stride ``merge_stride`` (4)."""

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_classes: int,
        channels: int = 128,
        seg_channels: int = 64,
        upsample: str = "up_bilinear",
        merge_stride: int = 4,
        block: str = "conv",
        block_args: dict[str, Any] | None = None,
        attention: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        _check_upsample(upsample)
        _level(strides, merge_stride, "fpn (merge_stride)")
        super().__init__(seg_channels, num_classes, dropout)
        conv = block_spec(block, block_args, attention)
        up = _up_spec(upsample, block_args)
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv(channels, channels) for _ in in_channels)
        self.scale_heads = nn.ModuleList()
        self.levels = [i for i, s in enumerate(strides) if s >= merge_stride]
        for i in self.levels:
            n = _steps(strides[i] // merge_stride)
            layers: list[nn.Module] = [conv(channels, seg_channels)]
            layers += [up(seg_channels, seg_channels) for _ in range(n)]
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, features: list[Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        laterals = [lat(f) for lat, f in zip(self.lateral, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        pyramid = [s(x) for s, x in zip(self.smooth, laterals)]
        merged = None
        for head, i in zip(self.scale_heads, self.levels):
            y = head(pyramid[i])
            if merged is not None and y.shape[-2:] != merged.shape[-2:]:
                y = F.interpolate(y, size=merged.shape[-2:], mode="bilinear", align_corners=False)
            merged = y if merged is None else merged + y
        return self._logits(merged, image_size)


@HEADS.register("deeplabv3plus")
class DeepLabV3PlusHead(_SegHead):
    """ASPP (``rates``) on the coarsest map to ``channels``, ×2 ``upsample`` blocks to stride 4,
    concatenated with the stride-4 features reduced to ``skip_channels``, two blocks."""

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_classes: int,
        channels: int = 128,
        skip_channels: int = 48,
        rates: list[int] | tuple[int, ...] = (6, 12, 18),
        upsample: str = "up_bilinear",
        skip_stride: int = 4,
        block: str = "conv",
        block_args: dict[str, Any] | None = None,
        attention: str | None = None,
        dropout: float = 0.1,
    ) -> None:
        _check_upsample(upsample)
        self_skip = _level(strides, skip_stride, "deeplabv3plus (skip_stride)")
        super().__init__(channels, num_classes, dropout)
        conv = block_spec(block, block_args, attention)
        up = _up_spec(upsample, block_args)
        self.skip_level = self_skip
        self.aspp = build_block("aspp", in_channels[-1], channels, rates=list(rates))
        self.up = nn.Sequential(
            *(up(channels, channels) for _ in range(_steps(strides[-1] // skip_stride)))
        )
        self.reduce = build_block("conv", in_channels[self_skip], skip_channels, kernel_size=1)
        self.fuse = nn.Sequential(
            conv(channels + skip_channels, channels), conv(channels, channels)
        )

    def forward(self, features: list[Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        x = self.up(self.aspp(features[-1]))
        skip = self.reduce(features[self.skip_level])
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self._logits(self.fuse(torch.cat([x, skip], 1)), image_size)


@HEADS.register("fcn")
class FCNHead(nn.Module):
    """FCN-8s: ``num_convs`` blocks of ``channels`` on the coarsest map (fc6/fc7), 1×1 class
    scores at the three coarsest strides (32, 16, 8 for the usual encoders), fused coarse to
    fine through ×2 ``upsample`` blocks on the score maps (linear: no norm, no activation)."""

    outputs = ("logits",)
    output_stride = 1

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        num_classes: int,
        channels: int = 256,
        num_convs: int = 2,
        upsample: str = "up_transposed",
        block: str = "conv",
        block_args: dict[str, Any] | None = None,
        attention: str | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_upsample(upsample)
        if len(strides) < 3:
            raise ConfigError(f"fcn needs at least three feature levels, got strides {strides}")
        conv = block_spec(block, block_args, attention)
        layers: list[nn.Module] = []
        width = in_channels[-1]
        for _ in range(num_convs):
            layers.append(conv(width, channels))
            width = channels
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.levels = [len(strides) - 3, len(strides) - 2]  # strides 8 and 16
        self.score_coarse = nn.Conv2d(width, num_classes, 1)
        self.score = nn.ModuleList(nn.Conv2d(in_channels[i], num_classes, 1) for i in self.levels)
        # Score maps are linear class evidence: the upsampling keeps them linear.
        up = _up_spec(upsample, norm="none", activation="none")
        self.up = nn.ModuleList()
        pairs = ((self.levels[1], len(strides) - 1), (self.levels[0], self.levels[1]))
        for finer, coarser in pairs:
            n = _steps(strides[coarser] // strides[finer])
            self.up.append(nn.Sequential(*(up(num_classes, num_classes) for _ in range(n))))
        for s in self.score:  # FCN's zero-initialised skip scores: training starts from FCN-32s
            nn.init.zeros_(s.weight)
            nn.init.zeros_(s.bias)

    def forward(self, features: list[Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        x = self.score_coarse(self.dropout(self.convs(features[-1])))
        for up, score, level in zip(self.up, reversed(self.score), reversed(self.levels)):
            skip = score(features[level])
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = x + skip
        if tuple(x.shape[-2:]) != tuple(image_size):
            x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False)
        return {"logits": x}
