"""Self-supervised monocular depth networks (Monodepth2, Godard et al., ICCV 2019).

``DepthModel`` holds four swappable parts, addressable by ``train.freeze`` / ``train.lr_mult``:
``depth_encoder`` (any registered backbone), ``depth_decoder`` (multi-scale sigmoid disparity),
``pose_encoder`` (a backbone taking frames stacked on channels: a pair, or with
``model.pose_input: all`` every frame of the sample) and ``pose_decoder``
(axis-angle + translation). Calling the model on images runs only the depth branch, so predict,
export and benchmarks see an ordinary image-to-depth network; the pose branch is for training.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backbones import build_backbone
from .heads import build_head
from .heads.depth import DepthDecoder  # noqa: F401  (re-exported: depth's parts in one place)


class PoseDecoder(nn.Module):
    """Relative camera motion from the pose encoder's deepest feature map.

    Outputs are multiplied by 0.01 (Monodepth2): the predicted motion starts near identity, so
    early warps sample close to the target instead of far across the image, where the
    photometric loss gives no useful gradient.
    """

    def __init__(self, in_channels: int, hidden: int = 256, poses: int = 1) -> None:
        super().__init__()
        self.poses = poses
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 6 * poses, 1),
        )

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """(axisangle (B, poses, 3), translation (B, poses, 3))."""
        out = 0.01 * self.net(feature).mean((2, 3)).view(-1, self.poses, 6)
        return out[..., :3], out[..., 3:]


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
        fixed_scale_over: str = "image",
        head_args: dict | None = None,
        backbone_args: dict | None = None,
        pose_frames: int = 2,
        fixed_scale_steps: int | None = None,
        count_batches: bool = False,
    ) -> None:
        super().__init__()
        if count_batches:
            # Training batches the pose branch has seen (loss.pose_refine starts after a number
            # of them); a buffer, so a resumed run counts on. Only with the option: checkpoints
            # written without it load unchanged.
            self.register_buffer("trained_batches", torch.zeros((), dtype=torch.long))
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
            fixed_scale_over=fixed_scale_over,
            # Passed only when set: a head without the option keeps working.
            **({"fixed_scale_steps": fixed_scale_steps} if fixed_scale_steps is not None else {}),
        )
        # Frames stacked on channels: the pose net sees every view at every layer. Two frames
        # give one motion; n frames (Monodepth2's "all" input) give the n - 1 sources' motions.
        self.pose_encoder = build_backbone(
            pose_backbone or backbone, in_channels=pose_frames * in_channels
        )
        self.pose_decoder = PoseDecoder(self.pose_encoder.out_channels[-1], poses=pose_frames - 1)

    def forward(self, images: Tensor, pose_frames: Tensor | None = None) -> dict:
        """``{("disp", s): (B, 1, H / 2**s, W / 2**s)}`` sigmoid disparities; with
        ``pose_frames`` also ``"pose"``: :meth:`predict_pose` of them. Training goes through
        here, not through ``predict_pose``: a DistributedDataParallel wrapper only has
        ``forward``, and only a call through it prepares its gradient all-reduce."""
        outputs = self.depth_decoder(self.depth_encoder(images))
        if pose_frames is not None:
            outputs = {**outputs, "pose": self.predict_pose(pose_frames)}
        return outputs

    def predict_pose(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Motion within ``frames`` (B, nC, H, W), n stacked frames: (axisangle, translation),
        each (B, n - 1, 3)."""
        if self.training and hasattr(self, "trained_batches"):
            self.trained_batches += 1
        return self.pose_decoder(self.pose_encoder(frames)[-1])
