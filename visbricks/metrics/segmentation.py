"""Semantic-segmentation metrics from one dataset-level confusion matrix (docs/architecture.md §1).

Every pixel of the split is counted into a single ``C × C`` matrix (rows = ground truth,
columns = prediction) before any ratio is taken, so an image with few pixels of a class weighs
exactly its pixels — not a per-image mean (mmsegmentation's and torchmetrics' convention).
Pixels whose label is the ignore index (255 by default) or otherwise outside ``0..C-1`` are
excluded from everything.

From the matrix ``M`` (``M[t, p]`` pixels of true class ``t`` predicted as ``p``):

- pixel accuracy = ``trace(M) / sum(M)``
- class accuracy (recall) ``c`` = ``M[c, c] / sum_p M[c, p]``; mean class accuracy = its mean
- IoU ``c`` = ``M[c, c] / (sum_p M[c, p] + sum_t M[t, c] - M[c, c])``; mIoU = its mean
- frequency-weighted IoU = ``sum_c freq_c · IoU_c`` with ``freq_c`` = share of ground-truth pixels

An absent class — no ground-truth pixel and no predicted pixel — has IoU NaN (0/0) and is left
out of mIoU, as mmseg does; a class predicted but never true has IoU 0 and counts. Class
accuracy is NaN for a class without ground truth and left out of the mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import EvalResult, Evaluator, fmt

IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    ``pred`` and ``target`` are integer label maps of the same shape; target pixels equal to
    ``ignore_index`` or outside ``0..C-1`` are not counted.
    """
    if pred.shape != target.shape:
        raise DataError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    # A prediction outside the class range can only come from a broken model; clamping would
    # hide that, so it is an error.
    p = pred[keep]
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise DataError(f"predicted labels outside 0..{num_classes - 1}")
    index = target[keep] * num_classes + p
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def segmentation_metrics(matrix: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | float]:
    """The metrics of the module docstring from a confusion matrix (rows = truth)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    gt = m.sum(1)
    predicted = m.sum(0)
    union = gt + predicted - tp
    total = m.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        class_acc = np.where(gt > 0, tp / gt, np.nan)
    freq = gt / total if total > 0 else np.zeros_like(gt)
    present = ~np.isnan(iou)
    return {
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_acc": _nanmean(class_acc),
        "mIoU": _nanmean(iou),
        "fwIoU": float((freq[present] * iou[present]).sum()) if total > 0 else float("nan"),
        "iou": iou,
        "class_acc": class_acc,
        "gt_pixels": gt,
        "pred_pixels": predicted,
    }


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if len(valid) else float("nan")


def format_table(
    classes: list[str], per_class: dict[str, np.ndarray], metrics: dict[str, float], prefix: str
) -> str:
    """The per-class report ``visbricks eval`` prints (IoU, accuracy, pixel counts)."""
    width = max(12, *(len(c) for c in classes))
    lines = [f"{'class':<{width}} {'IoU':>7} {'acc':>7} {'gt px':>10} {'pred px':>10}"]
    for c, name in enumerate(classes):
        lines.append(
            f"{name:<{width}} {fmt(per_class['iou'][c]):>7} {fmt(per_class['class_acc'][c]):>7} "
            f"{int(per_class['gt_pixels'][c]):>10} {int(per_class['pred_pixels'][c]):>10}"
        )
    p = f"{prefix}/"
    lines.append(
        f"mIoU {fmt(metrics[p + 'mIoU'])}  pixel acc {fmt(metrics[p + 'pixel_acc'])}  "
        f"mean class acc {fmt(metrics[p + 'mean_acc'])}  fwIoU {fmt(metrics[p + 'fwIoU'])}"
    )
    if np.isnan(per_class["iou"]).any():
        lines.append("(n/a: class absent from ground truth and predictions, left out of the means)")
    return "\n".join(lines)


# What ``resolution`` means, as the table says it (the task decides which one it feeds).
RESOLUTIONS = {
    "original": "scored at each label's original resolution (logits resized back, as mmseg)",
    "network": "scored at the network input resolution (labels resized to it, nearest)",
}


class SegmentationEvaluator(Evaluator):
    """One confusion matrix over a split: ``reset``, ``update`` per batch, ``compute``.

    ``update(predictions, targets)``: ``predictions`` are (N, C, H, W) logits or (N, H, W) label
    maps, ``targets`` (N, H, W) label maps with ``ignore_index`` where unlabelled; or both are
    lists of one (H, W) label map per image, whose sizes may differ (images scored at their own
    resolution). ``compute`` returns an :class:`EvalResult` whose ``details`` hold ``matrix``
    (rows = truth) and per-class arrays ``iou``, ``class_acc``, ``gt_pixels``, ``pred_pixels``;
    ``files`` writes ``confusion_matrix.png``. ``resolution`` (``original`` | ``network`` |
    None) only labels the result — the table's last line and ``info["<split>/resolution"]`` —
    it is the caller that feeds maps at that resolution.
    """

    def __init__(
        self,
        classes: list[str],
        ignore_index: int = IGNORE_INDEX,
        prefix: str = "val",
        resolution: str | None = None,
    ) -> None:
        if resolution is not None and resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)} or None")
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.ignore_index = ignore_index
        self.resolution = resolution
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(
        self,
        predictions: torch.Tensor | list[torch.Tensor],
        targets: torch.Tensor | list[torch.Tensor],
    ) -> None:
        if isinstance(predictions, (list, tuple)):
            if len(predictions) != len(targets):
                raise DataError(f"{len(predictions)} predictions for {len(targets)} targets")
            for p, t in zip(predictions, targets):
                self.update(p[None], t[None])  # one image at a time: sizes differ
            return
        if predictions.ndim == targets.ndim + 1:
            predictions = predictions.argmax(1)
        self.matrix += confusion_matrix(
            predictions.detach().cpu(), targets.detach().cpu(), self.num_classes, self.ignore_index
        )

    def compute(self) -> EvalResult:
        m = segmentation_metrics(self.matrix)
        metrics = self.loss_metrics()
        for k in ("mIoU", "pixel_acc", "mean_acc", "fwIoU"):
            metrics[self.key(k)] = float(m[k])
        for name, value in zip(self.classes, m["iou"]):
            metrics[self.key(f"IoU_{name}")] = float(value)
        per_class = {k: m[k] for k in ("iou", "class_acc", "gt_pixels", "pred_pixels")}
        matrix = self.matrix.numpy().copy()
        classes = self.classes
        table = format_table(classes, per_class, metrics, self.prefix)
        info = {}
        if self.resolution is not None:
            info[self.key("resolution")] = self.resolution
            table += f"\n{RESOLUTIONS[self.resolution]}"

        def write_matrix(path: Path) -> None:
            from .detection_plots import plot_confusion_matrix

            plot_confusion_matrix(
                matrix,
                classes,
                path,
                background=False,
                rows="true",
                title="Pixel confusion matrix",
            )

        return EvalResult(
            metrics=metrics,
            table=table,
            details={"matrix": matrix, **per_class},
            files={"confusion_matrix.png": write_matrix},
            info=info,
        )
