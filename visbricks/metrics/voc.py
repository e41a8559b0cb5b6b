"""Pascal VOC average precision, decision for decision the official devkit's algorithm.

The reference is ``VOCevaldet.m`` from the VOC devkit (and its Python port, py-faster-rcnn's
``voc_eval.py``). Per class:

1. every detection of the class, over all images, sorted by descending score (stable sort, so
   ties keep image order and then the order within the image);
2. each detection is compared with the ground truths of the *same class in the same image* and
   takes the one with the highest IoU (the first such one on a tie), whether or not that ground
   truth is already matched;
3. IoU >= ``iou_threshold``: a non-difficult ground truth not yet matched makes it a true positive
   (and is now matched); one already matched makes it a false positive (a duplicate); a
   ``difficult`` ground truth makes it neither. Below the threshold it is a false positive;
4. recall = TP / npos, where npos counts non-difficult ground truths only;
   precision = TP / (TP + FP).

IoU is computed on continuous XYXY pixel boxes, with **no +1** in widths and areas. The devkit
adds +1 because its corners are 1-based inclusive pixel indices (a box from column 1 to column 1
is one pixel wide); the visbricks VOC reader converts those corners to continuous coordinates
(``x1 - 1``, ``x2``), so the devkit's ``x2 - x1 + 1`` and our ``x2' - x1'`` are the same length and
both give the same IoU on the same annotation.

Two points where "the devkit" is ambiguous, decided deliberately: a detection matches at IoU
**>=** the threshold as in ``VOCevaldet.m`` (``voc_eval.py`` uses ``>``), and the sort is stable
(``voc_eval.py`` uses an unstable quicksort, so its order among tied scores is arbitrary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from ..errors import ConfigError, DataError

# The devkit's 11 recall thresholds are the floats np.arange yields (0.30000000000000004, ...), not
# k/10: a recall of exactly 3/10 does not reach the "0.3" threshold. voc_eval.py and mmdetection
# use these same floats, so keeping them keeps 11-point numbers comparable with published ones.
_VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def voc_ap(recall: Any, precision: Any, use_07_metric: bool = False) -> float:
    """Average precision of one class from cumulative recall/precision in descending score order.

    ``use_07_metric=True``: VOC2007's 11-point interpolation, the mean over recall thresholds
    t = 0, 0.1, ..., 1 of the best precision at recall >= t. Otherwise (VOC2010 onwards) the exact
    area under the monotone precision envelope (precision made non-increasing in recall).
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise DataError(
            f"voc_ap: recall has {rec.size} values but precision has {prec.size}; "
            "they must describe the same detections"
        )
    if use_07_metric:
        ap = 0.0
        for t in _VOC07_RECALL_THRESHOLDS:
            reached = rec >= t
            ap += (prec[reached].max() if reached.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # Right-to-left running maximum: the envelope the devkit builds with its backwards loop.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class VOCResult:
    """Per-class VOC AP and the curves behind it.

    ``map`` is the mean AP over the classes that have at least one non-difficult ground truth:
    the AP of a class nobody annotated is undefined (0/0 recall), and counting it as 0 would punish
    the model for the dataset's class list; this is also what COCOeval does. Such classes have
    ``ap = NaN``; ``map`` is NaN only when no class has a ground truth.
    """

    ap: np.ndarray  # (C,) float64, NaN where num_gt == 0
    map: float
    # Per class, one entry per counted detection (ignored ones dropped), in descending score order.
    precision: list[np.ndarray]
    recall: list[np.ndarray]  # NaN where num_gt == 0
    scores: list[np.ndarray]
    num_gt: np.ndarray  # (C,) non-difficult ground truths (the devkit's npos)
    num_det: np.ndarray  # (C,) all detections, ignored ones included
    num_tp: np.ndarray  # (C,) true positives
    iou_threshold: float
    use_07_metric: bool

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """Flat ``{"mAP50": ..., "AP50/<class>": ...}`` for logs and results.csv."""
        suffix = f"{round(self.iou_threshold * 100):d}"
        names = (
            list(class_names) if class_names is not None else [str(c) for c in range(len(self.ap))]
        )
        if len(names) != len(self.ap):
            raise ConfigError(f"{len(names)} class names given for {len(self.ap)} classes")
        out = {f"mAP{suffix}": self.map}
        out.update({f"AP{suffix}/{name}": float(ap) for name, ap in zip(names, self.ap)})
        return out


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _field(entry: Any, key: str, where: str) -> Any:
    # Ground truths may be dicts or objects with attributes (data.records.ImageRecord).
    if isinstance(entry, Mapping):
        if key not in entry:
            raise DataError(f"{where}: missing key '{key}' (has {sorted(entry)})")
        return entry[key]
    if not hasattr(entry, key):
        raise DataError(f"{where}: expected a dict with '{key}', got {type(entry).__name__}")
    return getattr(entry, key)


def _boxes(entry: Any, where: str) -> np.ndarray:
    boxes = _to_numpy(_field(entry, "boxes", where)).astype(np.float64, copy=False)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{where}: 'boxes' must have shape (N, 4) XYXY, got {tuple(boxes.shape)}")
    if not np.isfinite(boxes).all():
        raise DataError(f"{where}: 'boxes' contains NaN or infinite coordinates")
    return boxes


def _labels(entry: Any, n: int, num_classes: int | None, where: str) -> np.ndarray:
    raw = _to_numpy(_field(entry, "labels", where)).reshape(-1)
    if raw.size != n:
        raise DataError(f"{where}: 'labels' has {raw.size} entries but 'boxes' has {n}")
    if raw.size and not np.array_equal(raw, np.round(raw)):
        raise DataError(f"{where}: 'labels' must be integer class ids, got {raw[:5].tolist()}")
    labels = raw.astype(np.int64)
    if num_classes is None:
        if (labels < 0).any():
            raise DataError(f"{where}: negative class id {int(labels.min())}")
        return labels
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"{where}: class id {int(bad[0])} outside 0..{num_classes - 1} "
            f"(num_classes={num_classes})"
        )
    return labels


def prediction_arrays(
    pred: Any, num_classes: int | None, where: str = "prediction"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N,4) float64, labels (N,) int64, scores (N,) float64)`` from a prediction dict.

    Accepts numpy arrays, torch tensors (any device) or lists; ``where`` names the entry in errors.
    Labels must lie in 0..num_classes-1 (only be non-negative when ``num_classes`` is None).
    """
    boxes = _boxes(pred, where)
    labels = _labels(pred, len(boxes), num_classes, where)
    scores = _to_numpy(_field(pred, "scores", where)).astype(np.float64, copy=False).reshape(-1)
    if scores.size != len(boxes):
        raise DataError(f"{where}: 'scores' has {scores.size} entries but 'boxes' has {len(boxes)}")
    if not np.isfinite(scores).all():
        raise DataError(f"{where}: 'scores' contains NaN or infinite values")
    return boxes, labels, scores


def ground_truth_arrays(
    gt: Any, num_classes: int, where: str = "ground truth"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N,4) float64, labels (N,) int64, difficult (N,) bool)`` from a dict or ImageRecord.

    ``difficult`` is optional and defaults to all False.
    """
    boxes = _boxes(gt, where)
    labels = _labels(gt, len(boxes), num_classes, where)
    has_difficult = "difficult" in gt if isinstance(gt, Mapping) else hasattr(gt, "difficult")
    if not has_difficult:
        return boxes, labels, np.zeros(len(boxes), dtype=bool)
    difficult = _to_numpy(_field(gt, "difficult", where)).reshape(-1)
    if difficult.size != len(boxes):
        raise DataError(
            f"{where}: 'difficult' has {difficult.size} entries but 'boxes' has {len(boxes)}"
        )
    return boxes, labels, difficult.astype(bool)


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) float64 IoU of continuous XYXY boxes; 0/0 (two empty boxes) counts as no overlap."""
    iou = box_iou(torch.from_numpy(boxes1), torch.from_numpy(boxes2)).numpy()
    return np.nan_to_num(iou, nan=0.0)


def evaluate_voc(
    predictions: Sequence[Any],
    ground_truths: Sequence[Any],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> VOCResult:
    """VOC AP of every class and their mean, over images given in the same order in both lists.

    ``predictions[i]``: ``{"boxes": (N, 4) XYXY pixels, "labels": (N,), "scores": (N,)}``;
    ``ground_truths[i]``: ``{"boxes", "labels", "difficult"?}`` or a ``data.records.ImageRecord``.
    Arrays may be numpy or torch. Class ids are 0..num_classes-1.
    """
    if len(predictions) != len(ground_truths):
        raise DataError(
            f"{len(predictions)} prediction entries for {len(ground_truths)} ground-truth images; "
            "give one (possibly empty) prediction per image, in the same order"
        )
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")

    det_labels, det_scores, det_best_gt, det_best_iou = [], [], [], []
    gt_labels, gt_difficult = [], []
    gt_offset = 0
    for i, (pred, gt) in enumerate(zip(predictions, ground_truths)):
        pboxes, plabels, pscores = prediction_arrays(pred, num_classes, f"predictions[{i}]")
        gboxes, glabels, gdiff = ground_truth_arrays(gt, num_classes, f"ground_truths[{i}]")
        best_gt = np.full(len(pboxes), -1, dtype=np.int64)
        best_iou = np.full(len(pboxes), -np.inf)
        if len(pboxes) and len(gboxes):
            iou = pairwise_iou(pboxes, gboxes)
            # Only ground truths of the detection's own class compete; -1 is below any real IoU.
            iou[plabels[:, None] != glabels[None, :]] = -1.0
            # The best ground truth does not depend on which ones are already matched (the devkit
            # takes the argmax over all of them), so it can be found for all detections at once.
            j = iou.argmax(axis=1)
            best_gt = j + gt_offset
            best_iou = iou[np.arange(len(j)), j]
        det_labels.append(plabels)
        det_scores.append(pscores)
        det_best_gt.append(best_gt)
        det_best_iou.append(best_iou)
        gt_labels.append(glabels)
        gt_difficult.append(gdiff)
        gt_offset += len(gboxes)

    labels = np.concatenate(det_labels) if det_labels else np.zeros(0, np.int64)
    scores = np.concatenate(det_scores) if det_scores else np.zeros(0)
    best_gt = np.concatenate(det_best_gt) if det_best_gt else np.zeros(0, np.int64)
    above = (np.concatenate(det_best_iou) if det_best_iou else np.zeros(0)) >= iou_threshold
    glabels_all = np.concatenate(gt_labels) if gt_labels else np.zeros(0, np.int64)
    gdiff_all = np.concatenate(gt_difficult) if gt_difficult else np.zeros(0, bool)
    num_gt = np.bincount(glabels_all[~gdiff_all], minlength=num_classes)

    ap = np.full(num_classes, np.nan)
    precisions, recalls, sorted_scores = [], [], []
    num_det = np.zeros(num_classes, dtype=np.int64)
    num_tp = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(-scores[idx], kind="stable")]
        hit, gt_of = above[order], best_gt[order]
        ignored = np.zeros(len(order), dtype=bool)
        ignored[hit] = gdiff_all[gt_of[hit]]
        counted = hit & ~ignored
        # Greedy in score order: the first detection reaching a ground truth takes it, every later
        # one reaching the same ground truth is a duplicate (false positive).
        counted_idx = np.flatnonzero(counted)
        _, first = np.unique(gt_of[counted_idx], return_index=True)
        is_tp = np.zeros(len(order), dtype=bool)
        is_tp[counted_idx[first]] = True
        is_tp = is_tp[~ignored]
        tp = np.cumsum(is_tp, dtype=np.float64)
        fp = np.cumsum(~is_tp, dtype=np.float64)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        if num_gt[c] > 0:
            rec = tp / float(num_gt[c])
            ap[c] = voc_ap(rec, prec, use_07_metric)
        else:
            rec = np.full(len(tp), np.nan)
        precisions.append(prec)
        recalls.append(rec)
        sorted_scores.append(scores[order][~ignored])
        num_det[c] = len(order)
        num_tp[c] = int(is_tp.sum())

    annotated = num_gt > 0
    mean_ap = float(ap[annotated].mean()) if annotated.any() else float("nan")
    return VOCResult(
        ap=ap,
        map=mean_ap,
        precision=precisions,
        recall=recalls,
        scores=sorted_scores,
        num_gt=num_gt,
        num_det=num_det,
        num_tp=num_tp,
        iou_threshold=float(iou_threshold),
        use_07_metric=use_07_metric,
    )
