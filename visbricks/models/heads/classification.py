"""Classification head: global average pooling of the last feature level, dropout, linear."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import block_spec


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Logits for C classes (softmax for ``classify``, sigmoid per class for ``multilabel``).

    ``block`` (+ ``block_args``, ``attention``; null by default: torchvision's classifier) puts
    one conv block on the last feature map before the pooling, to ``channels`` (default: the
    map's own width), as ShuffleNetV2's conv5 and MobileNetV3's last 1x1 conv do; the linear
    layer then predicts from its pooled output.
    """

    outputs = ("logits",)
    output_stride = None  # one vector per image

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int] | None = None,
        num_classes: int = 1,
        dropout: float = 0.0,
        block: str | None = None,
        channels: int | None = None,
        block_args: dict | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        width = int(in_channels[-1])
        self.conv = None
        if block is not None:
            self.conv = block_spec(block, block_args, attention)(width, channels or width)
            width = self.conv.out_channels
        elif channels is not None or block_args or attention:
            # Without a block they would change nothing: refused rather than ignored.
            raise ConfigError(
                "channels, block_args and attention of the linear head need a block "
                "(model.head_args.block: conv, dwsep, ...)"
            )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        # Named ``fc`` so torchvision classifier weights map onto it (reported as shape-mismatched
        # when the class count differs).
        self.fc = nn.Linear(width, num_classes)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> dict:
        x = features[-1] if self.conv is None else self.conv(features[-1])
        x = self.pool(x).flatten(1)
        return {"logits": self.fc(self.dropout(x))}
