"""Normalization presets and their inverse for display (docs/architecture.md §4).

Everything is expressed on the 0..1 scale: the model sees ``(uint8 / 255 - mean) / std``.
Caffe's preset (mean in 0..255, std 1) becomes mean/255 and std 1/255, which is the same
arithmetic as ``uint8 - mean``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_255 = (123.675, 116.28, 103.53)


def resolve_normalization(spec: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``imagenet`` | ``caffe`` | ``none`` | ``{mean: [...], std: [...]}`` → (mean, std) on 0..1."""
    if spec in (None, "none"):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if spec == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if spec == "caffe":
        return tuple(m / 255 for m in CAFFE_MEAN_255), (1 / 255,) * 3
    if isinstance(spec, Mapping) and set(spec) == {"mean", "std"}:
        mean, std = list(spec["mean"]), list(spec["std"])
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"data.normalize needs 3 means and 3 positive stds, got {spec}")
        if max(mean) > 1.0:  # values given on the 0..255 scale, as mmdetection writes them
            mean, std = [m / 255 for m in mean], [s / 255 for s in std]
        return tuple(mean), tuple(std)
    raise ConfigError(
        f"data.normalize must be imagenet, caffe, none or {{mean: [...], std: [...]}}, got {spec!r}"
    )


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or 0..1 float (…, 3, H, W) → normalized float32."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo :func:`normalize`: normalized (…, 3, H, W) → float on 0..1 (not clamped)."""
    m = torch.tensor(mean, device=images.device).view(-1, 1, 1)
    s = torch.tensor(std, device=images.device).view(-1, 1, 1)
    return images.float() * s + m


def to_image(image01: torch.Tensor) -> np.ndarray:
    """CHW float on 0..1 → HWC uint8 RGB for display (clamped: augmentation overshoots)."""
    x = image01.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()
