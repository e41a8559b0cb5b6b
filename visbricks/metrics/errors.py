"""Per-sample error scores for the run report's error views (``deploy/report_views.py``).

Pure computation on one image (or one batch) at a time: which samples are worst, and why. The
split-level numbers stay with each task's evaluator; these functions rank the samples behind
them, with the same definitions where one exists (CULane's lane IoU, Monodepth2's median
scaling, the segmentation confusion matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from .lanes import culane_ious
from .segmentation import IGNORE_INDEX
from .segmentation import confusion_matrix as pixel_confusion

# A prediction overlapping a true object of its class by IoU in [LOW_IOU, match IoU) found the
# object but placed the box poorly; below LOW_IOU it found nothing (TIDE's background threshold).
LOW_IOU = 0.1


# --------------------------------------------------------------------------- classification
def sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each sample (B,) — the ranking of "top losses"."""
    ce = F.cross_entropy(
        logits.detach().float().cpu(), labels.detach().long().cpu(), reduction="none"
    )
    return ce.numpy().astype(np.float64)


def confused_pairs(matrix: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent mistakes of a confusion matrix (rows = true class):
    ``(true, predicted, count)``, most frequent first, ties by class ids; only counts > 0."""
    m = np.asarray(matrix).copy()
    np.fill_diagonal(m, 0)
    pairs = [(int(t), int(p), int(m[t, p])) for t, p in zip(*np.nonzero(m))]
    pairs.sort(key=lambda x: (-x[2], x[0], x[1]))
    return pairs[:k]


def multilabel_badness(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, C) distance of each score from its truth, ``|target - score|``: a positive scored low
    or a negative scored high ranks worst for that class."""
    return np.abs(np.asarray(targets, np.float64) - np.asarray(scores, np.float64))


# --------------------------------------------------------------------------- boxes
@dataclass
class BoxErrors:
    """How one image's predictions relate to its true boxes (indices into each list).

    ``tp``: (pred, true) matched at ``iou >= match_iou``, same class, one to one by score.
    ``poor``: (pred, true, iou), the unmatched prediction's best same-class overlap in
    ``[LOW_IOU, match_iou)``. ``wrong_class``: (pred, true), overlapping another class's object
    at ``>= match_iou``. ``duplicate``: a second prediction on an already matched object.
    ``fp``: every other prediction (background). ``missed``: true boxes no prediction found.
    """

    tp: list[tuple[int, int]] = field(default_factory=list)
    poor: list[tuple[int, int, float]] = field(default_factory=list)
    wrong_class: list[tuple[int, int]] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    fp: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Every mistake of the image: the sort key of the box error views."""
        n = len(self.poor) + len(self.wrong_class) + len(self.duplicate) + len(self.fp)
        return n + len(self.missed)

    def counts(self) -> dict[str, int]:
        return {
            "true_positives": len(self.tp),
            "false_positives": len(self.fp) + len(self.duplicate) + len(self.wrong_class),
            "poor_localisations": len(self.poor),
            "missed": len(self.missed),
        }


def box_errors(
    pred_boxes: np.ndarray,
    pred_labels: np.ndarray,
    pred_scores: np.ndarray,
    true_boxes: np.ndarray,
    true_labels: np.ndarray,
    match_iou: float = 0.5,
    low_iou: float = LOW_IOU,
) -> BoxErrors:
    """Sort one image's predictions into true positives and error kinds (:class:`BoxErrors`).

    Predictions are matched in descending score, each to the unmatched true box of its class
    it overlaps most (VOC's greedy rule), so ``tp`` counts what AP at ``match_iou`` counts.
    """
    pb = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    tb = np.asarray(true_boxes, np.float32).reshape(-1, 4)
    pl = np.asarray(pred_labels, np.int64).reshape(-1)
    tl = np.asarray(true_labels, np.int64).reshape(-1)
    order = np.argsort(-np.asarray(pred_scores, np.float64).reshape(-1), kind="stable")
    iou = np.zeros((len(pb), len(tb)))
    if len(pb) and len(tb):
        iou = torch.nan_to_num(box_iou(torch.from_numpy(pb), torch.from_numpy(tb))).numpy()
    same = pl[:, None] == tl[None, :]
    out = BoxErrors()
    matched: set[int] = set()
    found: set[int] = set()  # true boxes some prediction found, even poorly
    for p in order.tolist():
        same_iou = np.where(same[p], iou[p], -1.0)
        free = same_iou.copy()
        free[list(matched)] = -1.0
        if len(tb) and free.max() >= match_iou:
            t = int(free.argmax())
            matched.add(t)
            out.tp.append((p, t))
        elif len(tb) and same_iou.max() >= match_iou:
            out.duplicate.append(p)
        elif len(tb) and np.where(~same[p], iou[p], -1.0).max() >= match_iou:
            t = int(np.where(~same[p], iou[p], -1.0).argmax())
            found.add(t)
            out.wrong_class.append((p, t))
        elif len(tb) and same_iou.max() >= low_iou:
            t = int(same_iou.argmax())
            found.add(t)
            out.poor.append((p, t, float(same_iou[t])))
        else:
            out.fp.append(p)
    out.missed = [t for t in range(len(tb)) if t not in matched and t not in found]
    return out


# --------------------------------------------------------------------------- segmentation
def image_iou(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> float:
    """Mean IoU of one image over the classes present in its truth or its prediction (NaN when
    every pixel is ignored): the dataset mIoU's definition, on one image's confusion matrix."""
    m = (
        pixel_confusion(
            torch.as_tensor(np.asarray(pred)),
            torch.as_tensor(np.asarray(target)),
            num_classes,
            ignore_index,
        )
        .double()
        .numpy()
    )
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def error_mask(
    pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Boolean (H, W): pixels predicted wrong (ignored pixels are never wrong)."""
    pred, target = np.asarray(pred), np.asarray(target)
    return (pred != target) & (target != ignore_index)


# --------------------------------------------------------------------------- depth
def depth_frame(
    gt: np.ndarray, disparity: np.ndarray, min_depth: float, max_depth: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """One frame as ``metrics.depth.evaluate_depth`` scores it: ``(abs_rel, depth, error)``.

    ``depth`` is the prediction at the ground truth's size, median-scaled to it and clamped;
    ``error`` is ``|gt - depth| / gt`` on valid pixels (0 elsewhere). abs_rel is NaN for a
    frame without a valid ground-truth pixel.
    """
    gt = np.asarray(gt, np.float64)
    disp = torch.from_numpy(np.asarray(disparity, np.float64))[None, None]
    disp = F.interpolate(disp, size=gt.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    with np.errstate(divide="ignore"):
        depth = 1.0 / disp
    valid = (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        return float("nan"), np.clip(depth, min_depth, max_depth), np.zeros_like(gt)
    depth = depth * np.median(gt[valid]) / np.median(depth[valid])
    depth = np.clip(depth, min_depth, max_depth)
    error = np.where(valid, np.abs(gt - depth) / np.where(valid, gt, 1.0), 0.0)
    return float(error[valid].mean()), depth, error


# --------------------------------------------------------------------------- lanes
def lane_errors(
    pred: list[np.ndarray],
    truth: list[np.ndarray],
    shape: tuple[int, int],
    width: float,
    iou_thresh: float = 0.5,
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """CULane's matching of one image: ``(matched (pred, true) pairs, false positive preds,
    missed true lanes)``; a pair matches when its lane IoU is above ``iou_thresh``."""
    from scipy.optimize import linear_sum_assignment

    ious = culane_ious(pred, truth, shape, width)
    pairs: list[tuple[int, int]] = []
    if ious.size:
        rows, cols = linear_sum_assignment(ious, maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if ious[r, c] > iou_thresh]
    fp = sorted(set(range(len(pred))) - {p for p, _ in pairs})
    fn = sorted(set(range(len(truth))) - {t for _, t in pairs})
    return pairs, fp, fn


__all__ = [
    "LOW_IOU",
    "BoxErrors",
    "box_errors",
    "confused_pairs",
    "depth_frame",
    "error_mask",
    "image_iou",
    "lane_errors",
    "multilabel_badness",
    "sample_losses",
]
