"""IoU of paired boxes: box ``i`` of one set against box ``i`` of the other.

torchvision's ``box_iou`` compares every box with every box (N x M); a loss target or a
per-image score needs only the N pairs, and ``box_iou(a, b).diagonal()`` would compute N² of
them to keep N.
"""

from __future__ import annotations

import torch

__all__ = ["elementwise_iou"]


def elementwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (both (N, 4) XYXY): (N,), 0 where the union is empty (a
    degenerate pair scores 0, never NaN)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
