"""Detection losses: SSD's MultiBox loss with hard-negative mining, or RetinaNet's focal loss.

Targets carry user class ids 0..C-1; the loss shifts them to 1..C so that 0 is background,
matching the column layout of :class:`visbricks.models.heads.ssd.SSDHead`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ..errors import ConfigError, DataError
from ..ops.box_coder import BoxCoder
from ..ops.boxes import elementwise_iou
from ..ops.matching import atss_match, match_anchors

BOX_LOSSES = ("smooth_l1", "giou")
CLS_LOSSES = ("ce_hnm", "focal", "qfl")
SIGMOID_LOSSES = ("focal", "qfl")  # per-class sigmoid scores over columns 1..C
ASSIGNERS = ("max_iou", "atss")


def hard_negative_mask(
    background_loss: torch.Tensor,
    positive: torch.Tensor,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 0,
) -> torch.Tensor:
    """(B, A) bool mask of the negatives to train on: per image, the ``neg_pos_ratio * num_pos``
    (at least ``min_negatives``, at most all) non-positive anchors with the highest background
    loss. Without it ~99 % of anchors are easy background and swamp the gradient."""
    num_pos = positive.sum(dim=1)
    num_neg = (num_pos * neg_pos_ratio).long().clamp(min=min_negatives)
    num_neg = torch.minimum(num_neg, (~positive).sum(dim=1))
    loss = background_loss.detach().clone()
    loss[positive] = -float("inf")
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return rank < num_neg[:, None]


def _check_target(
    target: object, index: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    where = f"targets[{index}]"
    if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
        raise DataError(f"{where} must be a dict with 'boxes' (N, 4) and 'labels' (N,)")
    boxes = torch.as_tensor(target["boxes"])
    labels = torch.as_tensor(target["labels"])
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise DataError(f"{where}['boxes'] must have shape (N, 4), got {tuple(boxes.shape)}")
    if labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
        raise DataError(
            f"{where}['labels'] must have shape ({boxes.shape[0]},) to match its boxes, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(f"{where}['labels'] must be integer class ids, got {labels.dtype}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise DataError(
            f"{where}['labels'] has class ids {sorted(set(bad.tolist()))} "
            f"outside 0..{num_classes - 1}"
        )
    if not torch.isfinite(boxes).all():
        raise DataError(f"{where}['boxes'] contains NaN or infinite coordinates")
    return boxes, labels


class SSDLoss(nn.Module):
    """``loss = (cls + box_weight * box) / max(num_pos, 1)`` over the batch.

    * matching per image: ``"max_iou"``, SSD's fixed IoU threshold
      (:func:`visbricks.ops.matching.match_anchors`), or ``"atss"``, the adaptive threshold
      from each object's ``atss_topk`` nearest anchors per level
      (:func:`visbricks.ops.matching.atss_match`), which needs ``level_counts``: the anchors
      tensor -> anchors per level (``AnchorGenerator.level_counts``);
    * box: smooth-L1 on ``box_coder``-encoded deltas, or GIoU on decoded boxes, positives only;
    * cls: ``"ce_hnm"`` softmax cross-entropy over positives plus mined hard negatives
      (``neg_pos_ratio`` per positive; an image without objects still contributes
      ``min_negatives``, default ``neg_pos_ratio``, so false positives on empty images are
      punished), or ``"focal"`` sigmoid focal loss over the C foreground columns for every
      anchor, background being the all-zero target, or ``"qfl"``, GFL's quality focal loss
      (Li et al. 2020): the same sigmoid columns, but a positive's target on its class is the IoU
      of its decoded box with the object (detached), ``|target - p|^qfl_beta`` weighting the
      binary cross-entropy, so the score learns to rank boxes by how well they fit.
    """

    def __init__(
        self,
        num_classes: int,
        box_coder: BoxCoder | None = None,
        iou_threshold: float = 0.5,
        box_loss: str = "smooth_l1",
        cls_loss: str = "ce_hnm",
        neg_pos_ratio: float = 3,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_weight: float = 1.0,
        min_negatives: int | None = None,
        qfl_beta: float = 2.0,
        assigner: str = "max_iou",
        atss_topk: int = 9,
        level_counts: Callable[[torch.Tensor], list[int]] | None = None,
    ) -> None:
        super().__init__()
        if assigner not in ASSIGNERS:
            raise ConfigError(f"assigner must be one of {ASSIGNERS}, got {assigner!r}")
        if assigner == "atss" and level_counts is None:
            raise ConfigError("the atss assigner needs level_counts (the anchors per level)")
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if cls_loss not in CLS_LOSSES:
            raise ConfigError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.box_coder = box_coder or BoxCoder()
        self.iou_threshold = iou_threshold
        self.box_loss = box_loss
        self.cls_loss = cls_loss
        self.neg_pos_ratio = neg_pos_ratio
        self.min_negatives = int(neg_pos_ratio if min_negatives is None else min_negatives)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_weight = box_weight
        self.qfl_beta = qfl_beta
        self.assigner = assigner
        self.atss_topk = int(atss_topk)
        self.level_counts = level_counts

    def assign(
        self, anchors: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-anchor class targets (B, A) in 0..C (0 = background) and matched GT boxes (B, A, 4)
        (zeros where background)."""
        levels = self.level_counts(anchors) if self.assigner == "atss" else None
        labels_out, boxes_out = [], []
        for i, target in enumerate(targets):
            boxes, labels = _check_target(target, i, self.num_classes)
            boxes = boxes.to(device=anchors.device, dtype=anchors.dtype)
            labels = labels.to(anchors.device)
            if levels is None:
                matches = match_anchors(anchors, boxes, self.iou_threshold)
            else:
                matches = atss_match(anchors, boxes, levels, self.atss_topk)
            positive = matches >= 0
            cls = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
            gt = torch.zeros_like(anchors)
            cls[positive] = labels[matches[positive]] + 1
            gt[positive] = boxes[matches[positive]]
            labels_out.append(cls)
            boxes_out.append(gt)
        return torch.stack(labels_out), torch.stack(boxes_out)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        missing = [k for k in ("cls_logits", "box_deltas", "anchors") if k not in outputs]
        if missing:
            raise ConfigError(f"SSDLoss needs head outputs {missing}; got keys {sorted(outputs)}")
        # Losses in float32 even under autocast: log-sum-exp and the mining sort need the range.
        logits = outputs["cls_logits"].float()
        deltas = outputs["box_deltas"].float()
        anchors = outputs["anchors"].float()
        if logits.shape[-1] != self.num_classes + 1:
            raise ConfigError(
                f"SSDLoss was built for {self.num_classes} classes but the head outputs "
                f"{logits.shape[-1] - 1} (+1 background)"
            )
        if len(targets) != logits.shape[0]:
            raise DataError(f"got {len(targets)} targets for a batch of {logits.shape[0]} images")

        cls_target, gt_boxes = self.assign(anchors, targets)
        positive = cls_target > 0
        num_pos = positive.sum()
        normaliser = num_pos.clamp(min=1).float()

        pos_anchors = anchors.expand_as(deltas)[positive]
        # The positives' boxes, decoded once for the GIoU term and QFL's IoU targets.
        decoded = (
            self.box_coder.decode(deltas[positive], pos_anchors)
            if self.box_loss == "giou" or self.cls_loss == "qfl"
            else None
        )
        if self.box_loss == "smooth_l1":
            encoded = self.box_coder.encode(gt_boxes[positive], pos_anchors)
            box = F.smooth_l1_loss(deltas[positive], encoded, beta=1.0, reduction="sum")
        else:
            box = generalized_box_iou_loss(decoded, gt_boxes[positive], reduction="sum")

        if self.cls_loss == "ce_hnm":
            ce = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), cls_target.reshape(-1), reduction="none"
            ).view_as(cls_target)
            negative = hard_negative_mask(ce, positive, self.neg_pos_ratio, self.min_negatives)
            cls = ce[positive | negative].sum()
        elif self.cls_loss == "focal":
            onehot = F.one_hot(cls_target, self.num_classes + 1)[..., 1:].to(logits.dtype)
            cls = sigmoid_focal_loss(
                logits[..., 1:], onehot, self.focal_alpha, self.focal_gamma, reduction="sum"
            )
        else:
            cls = self._quality_focal(logits, decoded, positive, cls_target, gt_boxes)

        cls = cls / normaliser
        box = box / normaliser
        return {
            "loss": cls + self.box_weight * box,
            "cls": cls,
            "box": box,
            "num_pos": num_pos.detach().float(),
        }

    def _quality_focal(
        self,
        logits: torch.Tensor,
        decoded: torch.Tensor,
        positive: torch.Tensor,
        cls_target: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> torch.Tensor:
        """GFL's QFL summed over every anchor and class column: ``-|y - p|^beta * BCE(p, y)``
        with ``y`` the positive's IoU (of its ``decoded`` box, no gradient) on its class column,
        0 elsewhere."""
        scores = logits[..., 1:]
        target = torch.zeros_like(scores)
        if positive.any():
            quality = elementwise_iou(decoded.detach(), gt_boxes[positive])
            target[positive, cls_target[positive] - 1] = quality.to(target.dtype)
        bce = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
        weight = (scores.sigmoid() - target).abs().pow(self.qfl_beta)
        return (bce * weight).sum()

