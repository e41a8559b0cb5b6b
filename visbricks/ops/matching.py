"""Anchor ↔ ground-truth assignment by IoU, as in SSD (Liu et al. 2016, "Matching strategy")."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from ..errors import DataError


def _check_boxes(boxes: torch.Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise DataError(f"{name} must have shape (N, 4) XYXY, got {tuple(boxes.shape)}")


def match_anchors(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Index of the ground truth each anchor predicts, or -1 for background: (A,) int64.

    1. every anchor whose best IoU with any ground truth is ``>= iou_threshold`` takes that one;
    2. every ground truth then takes its best anchor even below the threshold, so no object is
       left without a positive. Two objects that share their best anchor would otherwise let one
       of them go unlearned, so these forced pairs are chosen greedily by IoU (highest first),
       each anchor used once: every ground truth gets a distinct anchor while there are anchors.
    """
    _check_boxes(anchors, "anchors")
    _check_boxes(gt_boxes, "ground-truth boxes")
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matches = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matches

    iou = box_iou(gt_boxes.to(anchors.dtype), anchors)  # (G, A)
    best_iou, best_gt = iou.max(dim=0)
    above = best_iou >= iou_threshold
    matches[above] = best_gt[above]

    gt_idx, anchor_idx = _forced_pairs(iou)
    matches[anchor_idx] = gt_idx
    return matches


def _forced_pairs(iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt indices, anchor indices) pairing each ground truth with a distinct best anchor."""
    best_anchor = iou.argmax(dim=1)
    if best_anchor.unique().numel() == best_anchor.numel():
        # The common case: greedy selection would pick exactly these pairs, so skip the loop.
        return torch.arange(iou.shape[0], device=iou.device), best_anchor
    work = iou.clone()
    num_gt, num_anchors = work.shape
    gts, anchors = [], []
    # One pass per object (tens at most), each an argmax over the (G, A) matrix.
    for _ in range(min(num_gt, num_anchors)):
        flat = int(work.argmax())
        g, a = divmod(flat, num_anchors)
        gts.append(g)
        anchors.append(a)
        work[g, :] = -1.0  # this object is served
        work[:, a] = -1.0  # this anchor is taken
    device = iou.device
    return torch.tensor(gts, device=device), torch.tensor(anchors, device=device)
