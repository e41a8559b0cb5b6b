"""The single-object localisation evaluator (``locate``): IoU of the box, class accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..ops.boxes import elementwise_iou
from .base import EvalResult, Evaluator
from .classification import confusion_matrix
from .detection_plots import plot_confusion_matrix


class LocalizationEvaluator(Evaluator):
    """``update(predictions, targets)``: both ``{"boxes": (B, 4) XYXY, "labels": (B,)}`` for
    the images that have an object, in the same pixels (original-image pixels, so the IoU does
    not depend on the letterbox).

    ``metrics``: ``iou`` (mean), ``acc`` (class right), ``acc_iou50`` (class right and IoU >=
    0.5, the classic localisation score). ``details``: ``per_class`` (name → objects, iou, acc),
    ``images``, ``confusion_matrix`` (rows true); file: ``confusion_matrix.png``.
    """

    def __init__(self, classes: list[str], prefix: str = "val") -> None:
        self.classes = list(classes)
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self._iou: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    def update(self, predictions: dict, targets: dict) -> None:
        p = predictions["boxes"].detach().float().cpu().reshape(-1, 4)
        t = targets["boxes"].detach().float().cpu().reshape(-1, 4)
        iou = elementwise_iou(p, t)  # a degenerate pair scores 0
        self._iou.append(iou.double().numpy())
        self._pred.append(predictions["labels"].detach().cpu().long().reshape(-1).numpy())
        self._true.append(targets["labels"].detach().cpu().long().reshape(-1).numpy())

    def compute(self) -> EvalResult:
        iou = np.concatenate(self._iou) if self._iou else np.zeros(0)
        pred = np.concatenate(self._pred) if self._pred else np.zeros(0, np.int64)
        true = np.concatenate(self._true) if self._true else np.zeros(0, np.int64)
        correct = pred == true
        hit = correct & (iou >= 0.5)
        nan = float("nan")
        metrics = self.loss_metrics()
        metrics[self.key("iou")] = float(iou.mean()) if iou.size else nan
        metrics[self.key("acc")] = float(correct.mean()) if correct.size else nan
        metrics[self.key("acc_iou50")] = float(hit.mean()) if hit.size else nan
        matrix = confusion_matrix(pred, true, len(self.classes))
        per_class = {}
        for c, name in enumerate(self.classes):
            mine = true == c
            per_class[name] = {
                "objects": int(mine.sum()),
                "iou": float(iou[mine].mean()) if mine.any() else nan,
                "acc": float(correct[mine].mean()) if mine.any() else nan,
            }
        width = max(12, *(len(c) for c in self.classes))
        lines = [
            f"largest object of {iou.size} images: mean IoU "
            f"{metrics[self.key('iou')]:.4f}, class accuracy {metrics[self.key('acc')]:.4f}, "
            f"class right and IoU >= 0.5: {metrics[self.key('acc_iou50')]:.4f}",
            f"{'class':<{width}} {'objects':>8} {'mean IoU':>9} {'accuracy':>9}",
        ]
        for name, v in per_class.items():
            lines.append(f"{name:<{width}} {v['objects']:>8} {v['iou']:>9.4f} {v['acc']:>9.4f}")

        def plot(path: Path) -> None:
            plot_confusion_matrix(matrix, self.classes, path, rows="true")

        details = {"per_class": per_class, "images": int(iou.size), "confusion_matrix": matrix}
        return EvalResult(metrics, "\n".join(lines), details, {"confusion_matrix.png": plot})


__all__ = ["LocalizationEvaluator"]
