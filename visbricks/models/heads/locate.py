"""Single-object localisation head: one box and one class per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import box_convert

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import block_spec


@HEADS.register("locate")
class LocateHead(nn.Module):
    """``boxes`` (B, 4) XYXY pixels of the input image and ``logits`` (B, C).

    The class comes from globally pooled features (as in the classification head, so it does not
    depend on where the object is). The box cannot: global pooling throws position away, so the
    box branch keeps a ``pool x pool`` grid of a 1x1-reduced map and regresses from it. Its four
    outputs are ``(cx, cy, w, h)`` passed through a sigmoid and scaled by the input width/height,
    so a box is never inverted and its centre always lies in the image.

    The reduction is a ``block`` (+ ``block_args``, ``attention``): by default a 1x1 ``conv``
    (+ BatchNorm + ReLU); e.g. ``block: deformable, block_args: {kernel_size: 3}``.
    """

    outputs = ("boxes", "logits")
    output_stride = None  # one box per image

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int] | None = None,
        num_classes: int = 1,
        hidden: int = 256,
        pool: int = 4,
        dropout: float = 0.0,
        reduced: int = 64,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        if hidden < 1 or pool < 1 or reduced < 1:
            raise ConfigError(
                f"locate head sizes must be positive: hidden={hidden}, pool={pool}, "
                f"reduced={reduced}"
            )
        channels = int(in_channels[-1])
        self.dropout = nn.Dropout(dropout)
        # Named ``fc`` like LinearHead's, so ImageNet classifier files are reported against it.
        self.fc = nn.Linear(channels, num_classes)
        make = block_spec(block, block_args, attention, kernel_size=1)
        self.box_branch = nn.Sequential(
            make(channels, reduced),
            nn.AdaptiveAvgPool2d(pool),
            nn.Flatten(1),
            nn.Linear(reduced * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 4),
        )

    def forward(
        self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        x = features[-1]
        logits = self.fc(self.dropout(x.mean(dim=(2, 3))))
        height, width = image_size
        scale = x.new_tensor([width, height, width, height], dtype=torch.float32)
        # float32 even under autocast: the box is compared with pixel coordinates.
        cxcywh = self.box_branch(x).float().sigmoid() * scale
        return {"boxes": box_convert(cxcywh, "cxcywh", "xyxy"), "logits": logits}
