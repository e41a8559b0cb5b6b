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
from ..registry import NECKS


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
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int = 128,
        levels: Sequence[int] = (1, 2, 3),
        extra_levels: int = 1,
    ) -> None:
        super().__init__()
        self.levels = _check_levels(in_channels, strides, levels, extra_levels)
        self.in_channels = list(in_channels)
        self.lateral = nn.ModuleList(
            nn.Conv2d(in_channels[lv], out_channels, 1) for lv in self.levels
        )
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in self.levels
        )
        self.extra = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            for _ in range(extra_levels)
        )
        top = strides[self.levels[-1]]
        self.strides = [int(strides[lv]) for lv in self.levels]
        self.strides += [int(top * 2 ** (i + 1)) for i in range(extra_levels)]
        self.out_channels = [out_channels] * len(self.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        _check_inputs(feats, self.in_channels, "FPN")
        laterals = [conv(feats[lv]) for conv, lv in zip(self.lateral, self.levels)]
        for i in range(len(laterals) - 2, -1, -1):
            # size= rather than scale_factor=2: odd input sizes make the finer map one pixel larger.
            up = F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
            laterals[i] = laterals[i] + up
        outs = [conv(x) for conv, x in zip(self.output, laterals)]
        x = outs[-1]
        for i, conv in enumerate(self.extra):
            # RetinaNet's P7 = conv(relu(P6)): without the ReLU stacked extras are one linear map.
            x = conv(F.relu(x) if i > 0 else x)
            outs.append(x)
        return outs


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@NECKS.register("ssd_extras")
class SSDExtras(nn.Module):
    """The original SSD's "extra feature layers" (Liu et al. 2016): the chosen backbone maps are
    passed through unchanged, then ``extra_levels`` blocks of 1x1 (``channels // 2``) + 3x3
    stride-2 (``channels``) convs, each with BatchNorm + ReLU, halve the resolution each time.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        levels: Sequence[int] = (2, 3),
        extra_levels: int = 2,
        channels: int = 128,
    ) -> None:
        super().__init__()
        self.levels = _check_levels(in_channels, strides, levels, extra_levels)
        self.in_channels = list(in_channels)
        blocks = []
        cin = in_channels[self.levels[-1]]
        for _ in range(extra_levels):
            blocks.append(
                nn.Sequential(
                    _conv_bn_relu(cin, max(channels // 2, 1), 1),
                    _conv_bn_relu(max(channels // 2, 1), channels, 3, stride=2),
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
