"""Necks: turn a backbone's feature list into the feature list a detection head predicts from.

A neck keeps the backbone contract: ``forward(list[Tensor]) -> list[Tensor]`` ordered by
increasing stride, with ``out_channels`` and ``strides`` attributes, so heads never need to know
whether a neck sits in front of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import BLOCKS, NECKS
from .blocks import block_spec, build_block, build_upsample, init_convs, is_upsampling


def _check_levels(
    in_channels: Sequence[int], strides: Sequence[int], levels: Sequence[int], extra: int
) -> list[int]:
    if len(in_channels) != len(strides):
        raise ConfigError(
            f"neck got {len(in_channels)} in_channels but {len(strides)} strides; "
            "both come from the backbone and must have one entry per feature map"
        )
    levels = [int(lv) for lv in levels]
    bad = [lv for lv in levels if not 0 <= lv < len(in_channels)]
    if not levels or bad:
        raise ConfigError(
            f"neck levels {levels} must be non-empty indices into the backbone's "
            f"{len(in_channels)} feature maps (strides {list(strides)})"
        )
    if levels != sorted(set(levels)):
        raise ConfigError(f"neck levels {levels} must be strictly increasing (by stride)")
    if extra < 0:
        raise ConfigError(f"extra_levels must be >= 0, got {extra}")
    return levels


def _check_inputs(feats: Sequence[torch.Tensor], in_channels: Sequence[int], name: str) -> None:
    got = [int(f.shape[1]) for f in feats]
    if got != list(in_channels):
        raise ConfigError(
            f"{name} was built for feature maps with channels {list(in_channels)} "
            f"but received {got}; build the neck from the backbone's out_channels"
        )


@NECKS.register("fpn")
class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al. 2017) with RetinaNet's extra levels.

    For the backbone maps chosen by ``levels``: 1x1 lateral convs to ``out_channels``, a top-down
    path adding nearest-upsampled coarser maps, and a 3x3 conv on each sum to undo upsampling
    aliasing. ``extra_levels`` stride-2 3x3 convs on top of the coarsest output (P6, P7 ...) give
    large objects a feature map whose cells see the whole object.

    ``block`` (+ ``block_args``, ``attention``) builds the 3x3 output and extra convs (bare by
    default, as in the paper); ``upsample`` is nearest or a learned x2 block (``up_bilinear``,
    ``up_transposed``) for the top-down path.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int = 128,
        levels: Sequence[int] = (1, 2, 3),
        extra_levels: int = 1,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
        upsample: str = "nearest",
    ) -> None:
        super().__init__()
        self.levels = _check_levels(in_channels, strides, levels, extra_levels)
        self.in_channels = list(in_channels)
        _check_block(block, upsample)
        # The paper's convs are bare (no norm, no activation): the defaults under block_args.
        make = block_spec(block, block_args, attention, norm="none", activation="none")
        # Laterals are channel projections: plain 1x1 convs whatever ``block`` is.
        self.lateral = nn.ModuleList(
            build_block(
                "conv", in_channels[lv], out_channels, kernel_size=1, norm="none", activation="none"
            )
            for lv in self.levels
        )
        self.output = nn.ModuleList(make(out_channels, out_channels) for _ in self.levels)
        self.extra = nn.ModuleList(
            make(out_channels, out_channels, stride=2) for _ in range(extra_levels)
        )
        self.up = (
            nn.ModuleList(
                build_upsample(
                    upsample, out_channels, out_channels, block_args, norm="none", activation="none"
                )
                for _ in self.levels[1:]
            )
            if upsample != "nearest"
            else None
        )
        top = strides[self.levels[-1]]
        self.strides = [int(strides[lv]) for lv in self.levels]
        self.strides += [int(top * 2 ** (i + 1)) for i in range(extra_levels)]
        self.out_channels = [out_channels] * len(self.strides)
        for conv in init_convs(self):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        _check_inputs(feats, self.in_channels, "FPN")
        laterals = [conv(feats[lv]) for conv, lv in zip(self.lateral, self.levels)]
        for i in range(len(laterals) - 2, -1, -1):
            up = laterals[i + 1] if self.up is None else self.up[i](laterals[i + 1])
            laterals[i] = laterals[i] + _resize(up, laterals[i])
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        x = outs[-1]
        for i, conv in enumerate(self.extra):
            # RetinaNet's P7 = conv(relu(P6)): without the ReLU stacked extras are one linear map.
            x = conv(F.relu(x) if i > 0 else x)
            outs.append(x)
        return outs


def _check_block(block: str, upsample: str) -> None:
    BLOCKS.get(block)  # an unknown name is named before anything is built
    if upsample != "nearest" and not is_upsampling(upsample):
        raise ConfigError(
            f"upsample must be nearest or an upsampling block "
            f"({', '.join(n for n in BLOCKS.names() if is_upsampling(n))}), got {upsample!r}"
        )


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # size= rather than scale_factor=2: odd input sizes make the finer map one pixel larger.
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


@NECKS.register("ssd_extras")
class SSDExtras(nn.Module):
    """The original SSD's "extra feature layers" (Liu et al. 2016): the chosen backbone maps are
    passed through unchanged, then ``extra_levels`` blocks of 1x1 (``channels // 2``) + 3x3
    stride-2 (``channels``) convs, each with BatchNorm + ReLU, halve the resolution each time.
    ``block`` (+ ``block_args``, ``attention``) replaces the stride-2 conv; the 1x1 stays a conv.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        levels: Sequence[int] = (2, 3),
        extra_levels: int = 2,
        channels: int = 128,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        self.levels = _check_levels(in_channels, strides, levels, extra_levels)
        self.in_channels = list(in_channels)
        _check_block(block, "nearest")
        make = block_spec(block, block_args, attention)
        blocks = []
        cin = in_channels[self.levels[-1]]
        hidden = max(channels // 2, 1)
        for _ in range(extra_levels):
            blocks.append(
                nn.Sequential(
                    build_block("conv", cin, hidden, kernel_size=1),
                    make(hidden, channels, stride=2),
                )
            )
            cin = channels
        self.extra = nn.ModuleList(blocks)
        top = strides[self.levels[-1]]
        self.strides = [int(strides[lv]) for lv in self.levels]
        self.strides += [int(top * 2 ** (i + 1)) for i in range(extra_levels)]
        self.out_channels = [int(in_channels[lv]) for lv in self.levels]
        self.out_channels += [channels] * extra_levels

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        _check_inputs(feats, self.in_channels, "SSDExtras")
        outs = [feats[lv] for lv in self.levels]
        x = outs[-1]
        for block in self.extra:
            x = block(x)
            outs.append(x)
        return outs
