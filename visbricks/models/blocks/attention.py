"""Attention modules (``attention: se | cbam`` after any block): channels in = out."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

from ...errors import ConfigError
from ...registry import BLOCKS
from .options import parse_options, positive


def _squeezed(channels: int, reduction: int) -> int:
    # At least 8 hidden units (as MobileNetV3's SE): one or two ReLU units on narrow necks die
    # and then pass no gradient to the attention at all.
    return min(channels, max(8, channels // reduction))


class _Attention:
    """Marks an attention module: channels in = out, applied after a block (``attention:``)."""

    attention = True
    keep_init = True

    @staticmethod
    def _check(name: str, in_channels: int, out_channels: int, stride: int) -> None:
        if in_channels != out_channels or stride != 1:
            raise ConfigError(
                f"attention {name!r} keeps the shape: in_channels ({in_channels}) must equal "
                f"out_channels ({out_channels}) and stride must be 1 (got {stride})"
            )


@dataclasses.dataclass(frozen=True)
class SEOptions:
    reduction: int = 16


@BLOCKS.register("se")
class SE(_Attention, SqueezeExcitation):
    """Squeeze-and-excitation (Hu et al. 2018): channel weights from globally pooled features
    (torchvision's ``SqueezeExcitation``)."""

    Options = SEOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("se", self.Options, options)
        self._check("se", in_channels, out_channels, stride)
        positive("se", reduction=o.reduction)
        SqueezeExcitation.__init__(self, in_channels, _squeezed(in_channels, o.reduction))
        self.out_channels = out_channels


@dataclasses.dataclass(frozen=True)
class CBAMOptions(SEOptions):
    spatial_kernel: int = 7


@BLOCKS.register("cbam")
class CBAM(_Attention, nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel attention from a shared MLP on
    the average- and max-pooled features, then spatial attention from a k x k conv on the
    channel-wise mean and max."""

    Options = CBAMOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        nn.Module.__init__(self)
        o = parse_options("cbam", self.Options, options)
        self._check("cbam", in_channels, out_channels, stride)
        positive("cbam", reduction=o.reduction, spatial_kernel=o.spatial_kernel)
        hidden = _squeezed(in_channels, o.reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels, 1),
        )
        self.spatial = nn.Conv2d(2, 1, o.spatial_kernel, padding=o.spatial_kernel // 2)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(avg + peak)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


class Attended(nn.Sequential):
    """A block followed by an attention module (``attention:`` option)."""

    def __init__(self, block: nn.Module, attention: nn.Module) -> None:
        super().__init__(block, attention)
        self.out_channels = block.out_channels
        self.upsamples = getattr(block, "upsamples", False)
