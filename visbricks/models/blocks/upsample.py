"""x2 upsampling blocks, for the ``upsample`` option of necks and decoders."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from torch import nn

from ...errors import ConfigError
from ...registry import BLOCKS
from .conv import ConvBlock
from .options import ConvOptions, ConvUnit, NormActOptions, parse_options, positive


class _Upsampling:
    """Marks a block that doubles the resolution (necks/decoders use them as ``upsample``)."""

    upsamples = True

    @staticmethod
    def _check_stride(name: str, stride: int) -> None:
        if stride != 1:
            raise ConfigError(f"block {name!r} upsamples x2 and takes no stride, got {stride}")


@BLOCKS.register("up_transposed")
class UpTransposed(_Upsampling, ConvUnit):
    """x2 upsampling by a transposed conv (+ norm + activation); the output is exactly twice the
    input size for any kernel size (padding and output_padding chosen for it). A transposed conv
    pads with zeros only, so its options are ``NormActOptions``."""

    Options = NormActOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("up_transposed", self.Options, options)
        self._check_stride("up_transposed", stride)
        positive("up_transposed", kernel_size=o.kernel_size)
        if o.kernel_size < 2:
            raise ConfigError("block 'up_transposed' needs kernel_size >= 2 to double the size")
        # out = 2 (H - 1) - 2 p + k + op = 2 H  ⇔  k - 2 p + op = 2
        padding, output_padding = (o.kernel_size - 1) // 2, o.kernel_size % 2
        layer = partial(nn.ConvTranspose2d, output_padding=output_padding)
        super().__init__(
            in_channels, out_channels, o.kernel_size, 2, padding=padding, conv_layer=layer,
            **o.unit(),
        )  # fmt: skip


@BLOCKS.register("up_bilinear")
class UpBilinear(_Upsampling, nn.Sequential):
    """x2 bilinear upsampling then a conv (+ norm + activation): no checkerboard artefacts."""

    Options = ConvOptions

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, **options: Any):
        o = parse_options("up_bilinear", self.Options, options)
        self._check_stride("up_bilinear", stride)
        nn.Sequential.__init__(
            self,
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ConvBlock(in_channels, out_channels, 1, **dataclasses.asdict(o)),
        )
        self.out_channels = out_channels
