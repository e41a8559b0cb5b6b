"""``depth_decoder``: Monodepth2's multi-scale disparity decoder, a head like any other (the depth
network in ``models/depth.py`` builds it by name)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import output_conv
from ..decoders import UNetDecoder


@HEADS.register("depth_decoder")
class DepthDecoder(nn.Module):
    """U-Net decoder from encoder features (strides 4..32) to disparity at strides 1, 2, 4, 8.

    The decoder is the generic :class:`~visbricks.models.decoders.UNetDecoder`: each level
    upsamples by 2 (nearest) and concatenates the encoder feature of that stride when there is
    one; its convs are Monodepth2's reflection-padded 3x3 conv + ELU (reflection padding avoids
    the dark border zero padding leaves in the disparity): ``block: conv`` with
    ``block_args: {padding_mode: reflect, activation: elu, norm: none}``, which ``block`` /
    ``block_args`` / ``attention`` / ``upsample`` change. ``("disp", s)`` is a sigmoid in
    [0, 1] at 1/2**s of the input size; the task maps it to depth in [min_depth, max_depth].
    ``init_disp`` is the sigmoid's starting value (through the output bias).

    With ``fixed_scale`` every output is rescaled so that its per-image mean is ``init_disp``
    (clamped at 1). Monocular depth has no observable scale, and trained from scratch that free
    scale collapses: depth shrinks to min_depth, where the sigmoid saturates and the gradient
    vanishes, faster than the pose net grows its translation (seen within ~15 steps on the
    synthetic streets). Normalising inverse depth by its mean removes that direction (Wang et
    al., "Learning Depth from Monocular Videos using Direct Methods", CVPR 2018). Because
    disparity is bounded in [0, 1], a pinned mean also bounds how much of the image can be near.
    (Pinning the mean *logit* instead does not: the net then made most pixels near and a few
    extremely far, worse than the constant baseline after one epoch.)
    """

    output_stride = 1  # ("disp", 0) is at the input size; its keys depend on ``scales``

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        scales: int = 4,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        init_disp: float = 0.5,
        fixed_scale: bool = False,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
        upsample: str = "nearest",
    ) -> None:
        super().__init__()
        self.init_disp = init_disp
        self.init_logit = math.log(init_disp / (1 - init_disp))
        self.fixed_scale = fixed_scale
        if strides[-1] != 2 ** (len(channels)):
            raise ConfigError(
                f"depth decoder needs an encoder whose last stride is {2 ** len(channels)}, "
                f"got strides {strides}"
            )
        if not 1 <= scales <= len(channels):
            raise ConfigError(f"depth decoder scales must be in 1..{len(channels)}, got {scales}")
        self.scales = scales
        options = {"padding_mode": "reflect", "activation": "elu", "norm": "none"}
        self.decoder = UNetDecoder(
            in_channels,
            strides,
            list(channels),
            [2**level for level in range(scales)],
            block=block,
            upsample=upsample,
            block_args={**options, **(block_args or {})},
            attention=attention,
            predict_channels=1,
        )
        for conv in self.decoder.predict.values():
            nn.init.constant_(output_conv(conv).bias, self.init_logit)

    def forward(self, features: list[Tensor]) -> dict:
        outputs = {}
        disps = self.decoder(features)
        # Coarsest first, the order the scales were always listed in.
        for stride, logit in reversed(list(zip(self.decoder.strides, disps))):
            disp = torch.sigmoid(logit)
            if self.fixed_scale:
                # The floor keeps the division's gradient (~1 / mean**2) finite when all of
                # a coarse scale's disparities collapse towards 0 (NaN gradients otherwise).
                mean = disp.mean((2, 3), keepdim=True).clamp(min=1e-4)
                disp = (disp * (self.init_disp / mean)).clamp(max=1)
            outputs[("disp", int(math.log2(stride)))] = disp
        return outputs
