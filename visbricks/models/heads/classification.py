"""Classification head: global average pooling of the last feature level, dropout, linear."""

from __future__ import annotations

import torch
from torch import nn

from ...registry import HEADS


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Logits for C classes (softmax for ``classify``, sigmoid per class for ``multilabel``)."""

    outputs = ("logits",)

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int] | None = None,
        num_classes: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        # Named ``fc`` so torchvision classifier weights map onto it (reported as shape-mismatched
        # when the class count differs).
        self.fc = nn.Linear(in_channels[-1], num_classes)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> dict:
        x = self.pool(features[-1]).flatten(1)
        return {"logits": self.fc(self.dropout(x))}
