"""The conv family: conv, dilated, aspp, deformable, dwsep, group_shuffle, gated.

Parameter counts (no norm, so every conv has a bias; ``k`` kernel size, ``g`` groups):
``conv``/``dilated`` ``(C_in k² / g + 1) C_out``; ``dwsep`` ``(k² + 1) C_in + (C_in + 1) C_out``;
``group_shuffle`` ``(C_in k² / g + 1) C_out + (C_out / g + 1) C_out``; ``gated`` twice ``conv``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from ...errors import ConfigError
from ...registry import BLOCKS
from .options import (
    ConvOptions,
    ConvUnit,
    GroupedOptions,
    ReflectConv2d,
    fit_groups,
    padded_conv,
    parse_options,
    positive,
    too_small,
)


@BLOCKS.register("conv")
class ConvBlock(ConvUnit):
    """conv + norm + activation; ``groups`` > 1 is a grouped conv."""

    block_name = "conv"  # as registered: the name a group fallback note gives
    Options = GroupedOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options(self.block_name, self.Options, options)
        positive(self.block_name, kernel_size=o.kernel_size, groups=o.groups, dilation=o.dilation)
        groups = fit_groups(
            self.block_name, "groups", o.groups, in_channels=in_channels, out_channels=out_channels
        )
        super().__init__(
            in_channels, out_channels, o.kernel_size, stride, padding_mode=o.padding_mode,
            dilation=o.dilation, groups=groups, **o.unit(),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DilatedOptions(GroupedOptions):
    dilation: int = 2


@BLOCKS.register("dilated")
class DilatedBlock(ConvBlock):
    """Dilated (atrous) conv: a k x k kernel with ``dilation - 1`` holes between taps. Same
    parameters as ``conv``; each layer widens the receptive field by ``(k - 1) * dilation``."""

    block_name = "dilated"
    Options = DilatedOptions


class _ImagePool(nn.Sequential):
    """ASPP's image-level branch: global average → 1x1 conv → broadcast back to the map."""

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:  # type: ignore[override]
        return F.interpolate(super().forward(x), size=tuple(size), mode="nearest")


@dataclasses.dataclass(frozen=True)
class ASPPOptions(ConvOptions):
    rates: Sequence[int] = (6, 12, 18)


@BLOCKS.register("aspp")
class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3, Chen et al. 2017): a 1x1 conv, one dilated
    k x k conv per rate and an image-pooling branch in parallel, concatenated and projected
    by a 1x1 conv. ``stride`` > 1 strides every conv branch. The dilated branches zero-pad
    whatever ``padding_mode`` says (taken for uniformity with the other blocks): a rate-18 tap
    cannot be reflected across a map smaller than 18 pixels, and DeepLab zero-pads. Its
    dilations are its ``rates``; ``dilation`` is refused rather than ignored."""

    Options = ASPPOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        super().__init__()
        o = parse_options("aspp", self.Options, options)
        rates = [int(r) for r in o.rates]
        positive(
            "aspp", kernel_size=o.kernel_size, **{f"rates[{i}]": r for i, r in enumerate(rates)}
        )
        if o.dilation != 1:
            raise ConfigError("block 'aspp': its dilations are its rates; leave dilation at 1")
        padded_conv(o.padding_mode)  # validates the name
        opts = o.unit()
        branches = [ConvUnit(in_channels, out_channels, 1, stride, **opts)]
        branches += [
            ConvUnit(in_channels, out_channels, o.kernel_size, stride, dilation=r, **opts)
            for r in rates
        ]
        self.branches = nn.ModuleList(branches)
        # No norm on a 1x1 map: BatchNorm over one value per channel fails for a batch of one
        # and GroupNorm would zero it; the branch keeps its bias instead.
        self.pool = _ImagePool(
            nn.AdaptiveAvgPool2d(1),
            ConvUnit(in_channels, out_channels, 1, norm="none", activation=o.activation),
        )
        self.project = ConvUnit(out_channels * (len(rates) + 2), out_channels, 1, **opts)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x, outs[0].shape[-2:]))
        return self.project(torch.cat(outs, 1))


class _KeepInit(nn.Conv2d):
    """A conv that necks/heads leave at its own initialisation (``init_convs`` skips it)."""

    keep_init = True


class DeformableConv2d(nn.Module):
    """``torchvision.ops.DeformConv2d`` with the conv predicting its offsets (and, ``modulated``,
    its DCNv2 mask) from the same input. The offset conv starts at zero and the mask is
    ``2 * sigmoid``, 1 at zero: at initialisation the block *is* a plain conv and learns to
    deform from there (Dai et al. 2017; Zhu et al. 2019). A ``padding_mode`` other than zeros
    pads the input explicitly (samples pushed beyond that border still read zeros)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        offset_groups: int = 1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.pad = None
        if padding_mode != "zeros" and padding:
            self.pad, padding = (padding,) * 4, 0
        self.padding_mode = padding_mode
        self.conv = DeformConv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.modulated = modulated
        self.taps = offset_groups * kernel_size * kernel_size
        self.offset = _KeepInit(
            in_channels, (3 if modulated else 2) * self.taps, kernel_size, stride, padding, dilation
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.in_channels, self.out_channels = in_channels, out_channels

    @property
    def weight(self) -> nn.Parameter:
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.conv.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            reflect_fails = self.padding_mode == "reflect" and too_small(self.pad[0], x)
            x = F.pad(x, self.pad, mode="replicate" if reflect_fails else self.padding_mode)
        out = self.offset(x)
        offset, mask = out[:, : 2 * self.taps], None
        if self.modulated:
            mask = 2 * torch.sigmoid(out[:, 2 * self.taps :])
        return self.conv(x, offset, mask)


@dataclasses.dataclass(frozen=True)
class DeformableOptions(ConvOptions):
    modulated: bool = False
    offset_groups: int = 1


@BLOCKS.register("deformable")
class DeformableBlock(ConvUnit):
    """Deformable conv (DCN; ``modulated: true`` for DCNv2) + norm + activation."""

    Options = DeformableOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("deformable", self.Options, options)
        positive("deformable", kernel_size=o.kernel_size, offset_groups=o.offset_groups)
        padded_conv(o.padding_mode)  # validates the name
        offset_groups = fit_groups(
            "deformable", "offset_groups", o.offset_groups, in_channels=in_channels
        )
        layer = partial(
            DeformableConv2d,
            modulated=bool(o.modulated),
            offset_groups=offset_groups,
            padding_mode=o.padding_mode,
        )
        super().__init__(
            in_channels, out_channels, o.kernel_size, stride, dilation=o.dilation,
            conv_layer=layer, **o.unit(),
        )  # fmt: skip


@BLOCKS.register("dwsep")
class DepthwiseSeparable(nn.Sequential):
    """Depthwise k x k conv (one filter per channel) → pointwise 1x1 conv, each with norm and
    activation (MobileNet, Howard et al. 2017): ``k² C_in + C_in C_out`` weights instead of
    ``k² C_in C_out``."""

    Options = ConvOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("dwsep", self.Options, options)
        positive("dwsep", kernel_size=o.kernel_size, dilation=o.dilation)
        super().__init__(
            ConvUnit(
                in_channels, in_channels, o.kernel_size, stride, padding_mode=o.padding_mode,
                dilation=o.dilation, groups=in_channels, **o.unit(),
            ),
            ConvUnit(in_channels, out_channels, 1, **o.unit()),
        )  # fmt: skip
        self.out_channels = out_channels


@dataclasses.dataclass(frozen=True)
class GroupShuffleOptions(GroupedOptions):
    groups: int = 4


@BLOCKS.register("group_shuffle")
class GroupShuffle(nn.Sequential):
    """Group conv → channel shuffle → 1x1 group conv (ShuffleNet, Zhang et al. 2018; the
    interleaved group convolutions of the notes). The shuffle re-deals the channels so that each
    group of the second conv sees one channel from every group of the first: the output depends
    on every input channel, at ``1 / groups`` of a dense conv's weights."""

    Options = GroupShuffleOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("group_shuffle", self.Options, options)
        positive("group_shuffle", kernel_size=o.kernel_size, groups=o.groups, dilation=o.dilation)
        groups = fit_groups(
            "group_shuffle", "groups", o.groups, in_channels=in_channels, out_channels=out_channels
        )
        super().__init__(
            ConvUnit(
                in_channels, out_channels, o.kernel_size, stride, padding_mode=o.padding_mode,
                dilation=o.dilation, groups=groups, **o.unit(),
            ),
            nn.ChannelShuffle(groups),
            ConvUnit(out_channels, out_channels, 1, groups=groups, **o.unit()),
        )  # fmt: skip
        self.out_channels = out_channels


class _Gate(ReflectConv2d):
    keep_init = True


@BLOCKS.register("gated")
class GatedConv(nn.Module):
    """Gated conv (Yu et al., free-form inpainting, 2019): ``act(norm(conv_f(x))) *
    sigmoid(conv_g(x))``, a learned soft mask on every output channel and pixel."""

    Options = ConvOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        super().__init__()
        o = parse_options("gated", self.Options, options)
        positive("gated", kernel_size=o.kernel_size, dilation=o.dilation)
        self.feature = ConvBlock(in_channels, out_channels, stride, **dataclasses.asdict(o))
        self.gate = _Gate(
            in_channels, out_channels, o.kernel_size, stride,
            (o.kernel_size - 1) // 2 * o.dilation, o.dilation, padding_mode=o.padding_mode,
        )  # fmt: skip
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.feature(x) * torch.sigmoid(self.gate(x))
