"""Generic decoders: encoder features in, features at chosen strides out.

``UNetDecoder`` is the U-Net-style decoder (Ronneberger et al. 2015) that the depth head uses and
a segmentation head can use: from the encoder's coarsest map, each level upsamples by 2,
concatenates the encoder feature of that stride when there is one, and fuses with a conv block.
Every conv is a block (``visbricks.models.blocks``) chosen by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import BLOCKS
from .blocks import block_options, block_spec, build_block, build_upsample, is_upsampling


class UNetDecoder(nn.Module):
    """Decoder levels at strides ``S/2, S/4, ..., min(out_strides)`` (``S`` the encoder's last
    stride); ``forward(features)`` returns one map per ``out_strides`` entry, finest first.

    ``channels``: an int, or one per decoder level, finest first. ``upsample``: ``nearest``
    (a conv block at the coarse resolution, then nearest x2, as Monodepth2) or an upsampling
    block (``up_bilinear``, ``up_transposed``) that does both. ``predict_channels``: a bare
    ``conv`` (no norm, no activation; ``block_args``' kernel size and padding) projecting each
    output to that many channels (a per-scale predictor: disparity, class logits for deep
    supervision); null returns the features.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        channels: int | Sequence[int] = 64,
        out_strides: Sequence[int] = (4,),
        block: str = "conv",
        upsample: str = "nearest",
        block_args: dict | None = None,
        attention: str | None = None,
        predict_channels: int | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides) or not strides:
            raise ConfigError(
                f"decoder got {len(in_channels)} in_channels but {len(strides)} strides; both "
                "come from the encoder, one entry per feature map"
            )
        top = int(strides[-1])
        out_strides = sorted({int(s) for s in out_strides})
        bad = [s for s in out_strides if s < 1 or s >= top or top % s or s & (s - 1)]
        if not out_strides or bad:
            raise ConfigError(
                f"decoder out_strides {out_strides} must be powers of two below the encoder's "
                f"last stride {top}"
            )
        n_levels = int(math.log2(top // out_strides[0]))
        # Decoder levels, coarsest first: the strides after each x2 upsampling.
        self.level_strides = [top // 2 ** (i + 1) for i in range(n_levels)]
        if isinstance(channels, int):
            channels = [channels] * n_levels
        channels = [int(c) for c in channels]
        if len(channels) != n_levels:
            raise ConfigError(
                f"decoder channels {channels} must have one entry per decoder level: {n_levels} "
                f"levels (strides {sorted(self.level_strides)}) from the encoder's last stride "
                f"{top} down to out_stride {out_strides[0]}"
            )
        BLOCKS.get(block)
        if upsample != "nearest" and not is_upsampling(upsample):
            build_upsample(upsample, 1, 1)  # names the valid choices
        make = block_spec(block, block_args, attention)
        # Predictors are plain convs (a 1-channel output cannot be grouped, shuffled or
        # pooled), with the block_args a conv takes (kernel_size, padding_mode ...) but its
        # groups, which are for the decoder's blocks.
        conv_options = set(block_options("conv")) - {"groups"}
        pred_options = {k: v for k, v in (block_args or {}).items() if k in conv_options}
        pred_options.update(norm="none", activation="none")
        self.skip_index = {int(s): i for i, s in enumerate(strides)}
        self.upsample = upsample
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.predict = nn.ModuleDict()
        by_stride = dict(zip(sorted(self.level_strides), channels))
        prev = int(in_channels[-1])
        # Built level by level (up, fuse, predictor): the order fixes each conv's random init.
        for stride in self.level_strides:
            ch = by_stride[stride]
            if upsample == "nearest":
                self.up.append(make(prev, ch))
            else:
                self.up.append(build_upsample(upsample, prev, ch, block_args, attention))
            skip = self.skip_index.get(stride)
            skip_ch = int(in_channels[skip]) if skip is not None else 0
            self.fuse.append(make(ch + skip_ch, ch))
            if predict_channels and stride in out_strides:
                self.predict[str(stride)] = build_block(
                    "conv", ch, predict_channels, **pred_options
                )
            prev = ch
        self.strides = out_strides
        self.out_channels = [predict_channels or by_stride[s] for s in out_strides]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        outputs: dict[int, Tensor] = {}
        x = features[-1]
        for stride, up, fuse in zip(self.level_strides, self.up, self.fuse):
            skip = self.skip_index.get(stride)
            size = (
                features[skip].shape[-2:]
                if skip is not None
                else (2 * x.shape[-2], 2 * x.shape[-1])
            )
            x = up(x)
            if self.upsample == "nearest" or x.shape[-2:] != size:
                # size= rather than scale_factor=2: an odd encoder map is one pixel off 2x.
                x = F.interpolate(x, size=tuple(size), mode="nearest")
            if skip is not None:
                x = torch.cat([x, features[skip]], 1)
            x = fuse(x)
            if stride in self.strides:
                key = str(stride)
                outputs[stride] = self.predict[key](x) if key in self.predict else x
        return [outputs[s] for s in self.strides]
