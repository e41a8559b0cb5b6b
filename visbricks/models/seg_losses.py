"""Semantic-segmentation losses: cross-entropy with an ignore index, class weights, OHEM, Dice,
Lovász-softmax.

Everything is computed in float32 whatever the logits' dtype: under bf16/fp16 autocast a
softmax over many pixels and a sum of per-pixel losses lose the precision the gradient needs.

OHEM (online hard example mining, as in mmseg's ``OHEMPixelSampler`` and the lane/real-time
segmentation repos): a pixel is kept when the predicted probability of its true class is below
``ohem_thresh``; at least ``ohem_min_kept`` of the hardest pixels are kept so an easy batch
still trains. The CE is averaged over kept pixels only.

Dice is the soft multi-class Dice over the batch: ``1 - mean_c 2|P∩G| / (|P| + |G|)`` on
softmax probabilities, ignored pixels excluded, with mmseg's smoothing of 1 so a class absent
from both prediction and ground truth scores ≈ 1 rather than 0/0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

IGNORE_INDEX = 255


class SegmentationLoss(nn.Module):
    """``ce_weight · CE (optionally OHEM) + dice_weight · Dice``; returns a dict of terms."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        class_weights: Sequence[float] | None = None,
        ce_weight: float = 1.0,
        dice_weight: float = 0.0,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 10000,
        label_smoothing: float = 0.0,
        lovasz_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise ConfigError(
                    f"loss.class_weights has {len(class_weights)} values for {num_classes} classes"
                )
            if any(float(w) < 0 for w in class_weights):
                raise ConfigError("loss.class_weights must be non-negative")
            self.register_buffer(
                "class_weights", torch.tensor([float(w) for w in class_weights]), persistent=False
            )
        else:
            self.class_weights = None
        if ohem_thresh is not None and not 0.0 < float(ohem_thresh) <= 1.0:
            raise ConfigError(f"loss.ohem_thresh must be in (0, 1] or null, got {ohem_thresh!r}")
        weights = dict(ce_weight=ce_weight, dice_weight=dice_weight, lovasz_weight=lovasz_weight)
        for key, value in weights.items():
            if float(value) < 0:
                raise ConfigError(f"loss.{key} must be ≥ 0, got {value!r}")
        if sum(float(v) for v in weights.values()) <= 0:
            raise ConfigError("loss.ce_weight, loss.dice_weight and loss.lovasz_weight are all 0")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.ohem_thresh = None if ohem_thresh is None else float(ohem_thresh)
        self.ohem_min_kept = int(ohem_min_kept)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (N, C, H, W), ``target`` (N, H, W) int class indices (ignore allowed)."""
        logits = logits.float()
        target = target.long()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False)
        valid = target != self.ignore_index
        # A label outside the class range that is not the ignore index is bad data, and CE would
        # fail on it with an opaque device assert: treat it as ignored (data check reports it).
        valid &= (target >= 0) & (target < self.num_classes)
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        # One log-softmax of the whole map serves every term (CE, OHEM, Dice, Lovász), not one
        # per term.
        log_prob = logits.log_softmax(1)
        terms: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        if self.ce_weight > 0:
            ce = self._cross_entropy(log_prob, safe_target, valid)
            terms["ce"] = ce.detach()
            total = total + self.ce_weight * ce
        prob = log_prob.exp() if self.dice_weight > 0 or self.lovasz_weight > 0 else None
        if self.dice_weight > 0:
            dice = self._dice(prob, safe_target, valid)
            terms["dice"] = dice.detach()
            total = total + self.dice_weight * dice
        if self.lovasz_weight > 0:
            lovasz = self._lovasz(prob, safe_target, valid)
            terms["lovasz"] = lovasz.detach()
            total = total + self.lovasz_weight * lovasz
        terms["loss"] = total
        return terms

    def _cross_entropy(
        self, log_prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(log_prob.device)
        if self.label_smoothing > 0:
            # cross_entropy of log-probabilities is exact (a log-softmax of them changes
            # nothing); it is the one form that smooths labels with class weights.
            per_pixel = F.cross_entropy(
                log_prob, target, weight=weight, reduction="none",
                label_smoothing=self.label_smoothing,
            )  # fmt: skip
        else:
            per_pixel = F.nll_loss(log_prob, target, weight=weight, reduction="none")
        keep = valid
        if self.ohem_thresh is not None:
            with torch.no_grad():
                prob = log_prob.gather(1, target[:, None])[:, 0].exp()
                prob = torch.where(valid, prob, torch.ones_like(prob))  # ignored: never "hard"
                n_valid = int(valid.sum())
                min_kept = min(self.ohem_min_kept, n_valid)
                threshold = torch.tensor(self.ohem_thresh, device=prob.device)
                if min_kept > 0:
                    # Raise the threshold to the min_kept-th smallest probability when fewer
                    # pixels than that are below it.
                    kth = prob.flatten().kthvalue(min_kept).values
                    threshold = torch.maximum(threshold, kth)
                keep = valid & (prob <= threshold)
        if weight is not None:
            # Weighted mean as F.cross_entropy's 'mean' reduction defines it: Σ w·l / Σ w.
            denom = (weight[target] * keep).sum()
        else:
            denom = keep.sum()
        return (per_pixel * keep).sum() / denom.clamp_min(1e-6)

    def _dice(self, prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # Per class, without a one-hot map (with one, Dice took two thirds of the loss's time
        # on 8 x 384x288 x 11 classes): |P| sums the probabilities over labelled pixels, |P∩G|
        # scatters each pixel's true-class probability onto its class, |G| counts its pixels.
        c = prob.shape[1]
        validf = valid.to(prob.dtype)
        total_prob = (prob * validf[:, None]).sum((0, 2, 3))
        true_prob = prob.gather(1, target[:, None])[:, 0] * validf  # 0 where ignored
        inter = prob.new_zeros(c).scatter_add(0, target.flatten(), true_prob.flatten())
        count = torch.bincount(target[valid], minlength=c).to(prob.dtype)
        # smooth = 1 (mmseg's DiceLoss): a class absent from both scores ≈ 1 instead of 0/0.
        dice = (2 * inter + 1.0) / (total_prob + count + 1.0)
        return 1.0 - dice.mean()

    def _lovasz(
        self, prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        labelled = prob.permute(0, 2, 3, 1)[valid]  # (P, C), labelled pixels only
        if labelled.shape[0] == 0:
            return prob.sum() * 0.0  # keeps the graph: an all-ignored batch adds nothing
        return lovasz_softmax(labelled, target[valid], self.num_classes)


def lovasz_softmax(prob: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean Lovász hinge of the Jaccard loss over the classes present in ``labels``.

    ``prob`` (P, C) class probabilities, ``labels`` (P,) class indices. One sort per class over
    all P pixels, done for every class at once on a (C, P) copy: sorting along the contiguous
    dimension ran 1.2x faster than along dim 0 here.
    """
    fg = F.one_hot(labels, num_classes).t().to(prob.dtype)  # (C, P)
    errors = (fg - prob.t()).abs()
    errors_sorted, order = errors.sort(1, descending=True)
    with torch.no_grad():
        fg_sorted = fg.gather(1, order)
        gts = fg_sorted.sum(1, keepdim=True)  # (C, 1) pixels of each class
        # Jaccard loss of the set "the first i sorted pixels are wrong", for i = 1..P: the
        # weights are its increments (the Lovász extension's gradient, Algorithm 1 of the paper).
        intersection = gts - fg_sorted.cumsum(1)
        union = gts + (1.0 - fg_sorted).cumsum(1)
        jaccard = 1.0 - intersection / union
        increments = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)
    per_class = (errors_sorted * increments).sum(1)
    present = gts[:, 0] > 0
    return per_class[present].mean()
