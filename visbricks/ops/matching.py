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


def atss_match(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    level_counts: list[int],
    topk: int = 9,
) -> torch.Tensor:
    """ATSS (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free
    Detection via Adaptive Training Sample Selection"): the ground truth each anchor predicts,
    or -1, as (A,) int64. ``anchors`` are laid out level by level, ``level_counts[l]`` of them
    on level ``l``.

    Per object: on every level, the ``topk`` anchors whose centres lie nearest the object's
    centre are candidates; the IoU threshold is the mean plus the standard deviation of the
    candidates' IoUs, so it adapts to the object (a large std: one level fits it clearly, and
    only that level's anchors pass). Candidates at or above the threshold whose centre lies
    inside the object (by more than 0.01 px) are positives; an anchor claimed by several objects
    predicts the one it overlaps most. Unlike :func:`match_anchors` nothing is forced: an
    object no candidate centre lies in gets no positive, as in the reference.
    """
    _check_boxes(anchors, "anchors")
    _check_boxes(gt_boxes, "ground-truth boxes")
    if sum(level_counts) != anchors.shape[0]:
        raise DataError(
            f"level counts {list(level_counts)} add up to {sum(level_counts)}, "
            f"not to the {anchors.shape[0]} anchors"
        )
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    matches = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matches
    gt_boxes = gt_boxes.to(anchors.dtype)
    iou = box_iou(gt_boxes, anchors)  # (G, A)
    anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distance = torch.cdist(gt_centres, anchor_centres)  # (G, A)
    candidates, start = [], 0
    for count in level_counts:
        if count:
            # A stable sort, not topk: the k anchors of one cell tie in distance, and which of
            # them fill the last places must not depend on the kernel (lowest index first).
            order = distance[:, start : start + count].sort(dim=1, stable=True).indices
            candidates.append(order[:, :topk] + start)
        start += count
    candidates = torch.cat(candidates, 1)  # (G, K): disjoint per level, so no repeats
    candidate_iou = iou.gather(1, candidates)
    # torch.std is the unbiased estimate, as the reference's; one candidate has no spread.
    spread = candidate_iou.std(1).nan_to_num(0.0) if candidates.shape[1] > 1 else 0.0
    threshold = candidate_iou.mean(1) + spread
    centres = anchor_centres[candidates]  # (G, K, 2)
    inside = torch.minimum(
        (centres - gt_boxes[:, None, :2]).min(-1).values,
        (gt_boxes[:, None, 2:] - centres).min(-1).values,
    ) > 0.01
    positive = (candidate_iou >= threshold[:, None]) & inside
    # A centre inside the object means a positive overlap, so -1 marks "not this object's".
    score = torch.full_like(iou, -1.0)
    score.scatter_(1, candidates, torch.where(positive, candidate_iou, -1.0))
    best, best_gt = score.max(0)
    taken = best > 0
    matches[taken] = best_gt[taken]
    return matches
