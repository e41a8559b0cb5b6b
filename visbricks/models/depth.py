"""Self-supervised monocular depth networks (Monodepth2, Godard et al., ICCV 2019).

``DepthModel`` holds four swappable parts, addressable by ``train.freeze`` / ``train.lr_mult``:
``depth_encoder`` (any registered backbone), ``depth_decoder`` (multi-scale sigmoid disparity),
``pose_encoder`` (a backbone taking two frames stacked on channels) and ``pose_decoder``
(axis-angle + translation). Calling the model on images runs only the depth branch, so predict,
export and benchmarks see an ordinary image-to-depth network; the pose branch is for training.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import HEADS
from .backbones import build_backbone
from .blocks import output_conv
from .decoders import UNetDecoder
from .heads import build_head


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


class PoseDecoder(nn.Module):
    """Relative camera motion from the pose encoder's deepest feature map.

    Outputs are multiplied by 0.01 (Monodepth2): the predicted motion starts near identity, so
    early warps sample close to the target instead of far across the image, where the
    photometric loss gives no useful gradient.
    """

    def __init__(self, in_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 6, 1),
        )

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """(axisangle (B, 1, 3), translation (B, 1, 3))."""
        out = 0.01 * self.net(feature).mean((2, 3))
        return out[:, None, :3], out[:, None, 3:]


class DepthModel(nn.Module):
    """Depth encoder/decoder plus pose encoder/decoder; ``forward(images)`` is depth only."""

    def __init__(
        self,
        backbone: str = "resnet18",
        pose_backbone: str | None = None,
        head: str = "depth_decoder",
        scales: int = 4,
        in_channels: int = 3,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
        fixed_scale: bool = False,
        head_args: dict | None = None,
        backbone_args: dict | None = None,
    ) -> None:
        super().__init__()
        # backbone_args (e.g. min_stride: 2, Monodepth2's skip at stride 2) shape the depth
        # encoder; the pose encoder only feeds its coarsest map to the pose decoder.
        self.depth_encoder = build_backbone(
            backbone, in_channels=in_channels, **dict(backbone_args or {})
        )
        # Start at the log-middle of the depth range (Monodepth2's sigmoid midpoint is only 2x
        # from min_depth for 0.1..100 m): the same room (~30x) for the scene to spread nearer
        # and farther. With fixed_scale this is also where each image's mean disparity stays.
        start = 1 / math.sqrt(min_depth * max_depth)
        init_disp = (start - 1 / max_depth) / (1 / min_depth - 1 / max_depth)
        self.depth_decoder = build_head(
            head,
            self.depth_encoder.out_channels,
            self.depth_encoder.strides,
            head_args,
            scales=scales,
            init_disp=init_disp,
            fixed_scale=fixed_scale,
        )
        # Two frames stacked on channels: the pose net sees both views at every layer.
        self.pose_encoder = build_backbone(pose_backbone or backbone, in_channels=2 * in_channels)
        self.pose_decoder = PoseDecoder(self.pose_encoder.out_channels[-1])

    def forward(self, images: Tensor) -> dict:
        """``{("disp", s): (B, 1, H / 2**s, W / 2**s)}`` sigmoid disparities."""
        return self.depth_decoder(self.depth_encoder(images))

    def predict_pose(self, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """Motion between the two frames of ``pairs`` (B, 2C, H, W): (axisangle, translation)."""
        return self.pose_decoder(self.pose_encoder(pairs)[-1])
