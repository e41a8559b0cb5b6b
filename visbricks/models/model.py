"""The assembled model: backbone → (neck) → head, each a swappable brick chosen by name."""

from __future__ import annotations

import torch
from torch import nn


class VisionModel(nn.Module):
    """``forward(images) -> dict`` of named outputs (``logits``, ``cls_logits``, ``boxes`` ...).

    The top-level children ``backbone``, ``neck`` and ``head`` are what ``train.freeze`` and
    ``train.lr_mult`` refer to.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, neck: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck if neck is not None else nn.Identity()
        self.head = head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.neck(self.backbone(images))
        return self.head(features, tuple(images.shape[-2:]))
