"""Classification metrics from accumulated logits: top-k, per-class P/R/F1, confusion matrix,
and for multi-label: mAP over classes and F1 at a threshold; and the two evaluators.

Conventions (they decide numbers when scores tie):

- **top-k with ties**: a class ranks by the number of classes scoring strictly higher, and among
  equal scores the lower class id ranks first (the class ``argmax`` returns). So top-1 is always
  the argmax the confusion matrix uses, and a prediction is never counted right by a tie it
  happened to win at random. (scikit-learn's ``top_k_accuracy_score`` breaks ties the other way,
  towards the *higher* class id.)
- **multi-label AP** is scikit-learn's ``average_precision_score``: sum over distinct score
  thresholds of (R_n - R_{n-1}) * P_n, tied scores forming one threshold (no interpolation).
  A class with no positive in the split has no AP: it shows "n/a" and is left out of the mean,
  as VOC and COCO leave out classes without ground truth. scikit-learn instead gives it 0.0 and
  counts that 0 in its macro average; both numbers are the same whenever every class has a
  positive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import EvalResult, Evaluator, fmt


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> dict:
    """Fraction of samples whose target ranks among the ``k`` best, for each ``k`` in ``ks``.

    Rank = classes scoring strictly higher + tied classes with a lower id (see module doc).
    """
    logits = logits.float()
    targets = targets.long()
    target_score = logits.gather(1, targets[:, None])
    ids = torch.arange(logits.shape[1], device=logits.device)[None]
    rank = (logits > target_score).sum(1) + (
        (logits == target_score) & (ids < targets[:, None])
    ).sum(1)
    return {f"top{k}": (rank < k).float().mean().item() for k in ks}


def confusion_matrix(preds: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(targets * num_classes + preds, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class as scikit-learn's ``average_precision_score`` computes it: the sum over
    distinct score thresholds (ties grouped) of recall gained times precision there.

    NaN when the class has no positive (scikit-learn returns 0.0 there; see the module doc).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives = np.asarray(positives).reshape(-1) > 0
    if positives.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positives[order].astype(np.float64)
    # The last index of each run of equal scores: one threshold per distinct score.
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    gained = np.diff(np.r_[0.0, recall])
    return float((gained * precision).sum())


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    """mAP over classes that have positives; micro and macro F1 at ``threshold``.

    ``probs`` (N, C) scores (any monotone score works for AP; F1 thresholds them), ``targets``
    (N, C) 0/1.
    """
    aps = [average_precision(probs[:, c], targets[:, c] > 0.5) for c in range(probs.shape[1])]
    valid = [a for a in aps if not np.isnan(a)]
    pred = probs >= threshold
    truth = targets > 0.5
    tp = (pred & truth).sum(0).astype(float)
    fp = (pred & ~truth).sum(0).astype(float)
    fn = (~pred & truth).sum(0).astype(float)
    micro = 2 * tp.sum() / max(1.0, 2 * tp.sum() + fp.sum() + fn.sum())
    per_class = np.divide(
        2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0
    )
    return {
        "mAP": float(np.mean(valid)) if valid else 0.0,
        "f1_micro": float(micro),
        "f1_macro": float(per_class.mean()),
        "exact_match": float((pred == truth).all(1).mean()),
        "per_class_ap": aps,
    }


class ClassificationEvaluator(Evaluator):
    """Single-label classification: ``update(logits (B, C), labels (B,))``.

    ``metrics``: ``top1``, ``top<k>``, ``f1_macro`` (plus the loss terms added);
    ``details``: ``confusion_matrix`` (rows true, columns predicted), ``precision``, ``recall``,
    ``f1`` (arrays per class); files: ``confusion_matrix.png``.
    """

    def __init__(self, classes: list[str], topk: int = 5, prefix: str = "val") -> None:
        self.classes = list(classes)
        self.topk = int(topk)
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self._logits.append(predictions.detach().float().cpu())
        self._labels.append(targets.detach().long().cpu())

    def compute(self) -> EvalResult:
        c = len(self.classes)
        logits = torch.cat(self._logits) if self._logits else torch.zeros(0, c)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        metrics = self.loss_metrics()
        ks = (1, self.topk) if self.topk != 1 else (1,)
        if len(labels):
            metrics.update({self.key(k): v for k, v in topk_accuracy(logits, labels, ks).items()})
        else:
            metrics.update({self.key(f"top{k}"): float("nan") for k in ks})
        matrix = confusion_matrix(logits.argmax(1).numpy(), labels.numpy(), c)
        precision, recall, f1 = precision_recall_f1(matrix)
        metrics[self.key("f1_macro")] = float(f1.mean())
        width = max(16, *(len(n) for n in self.classes))
        lines = [f"{'class':<{width}} {'images':>7} {'precision':>9} {'recall':>7} {'f1':>6}"]
        for name, n, p, r, f in zip(self.classes, matrix.sum(1), precision, recall, f1):
            lines.append(f"{name:<{width}} {int(n):>7} {p:9.3f} {r:7.3f} {f:6.3f}")
        table = "\n".join(lines)

        def plot(path: Path) -> None:
            from .detection_plots import plot_confusion_matrix

            plot_confusion_matrix(matrix, self.classes, path, rows="true")

        return EvalResult(
            metrics,
            table,
            {"confusion_matrix": matrix, "precision": precision, "recall": recall, "f1": f1},
            {"confusion_matrix.png": plot},
        )


class MultiLabelEvaluator(Evaluator):
    """Multi-label: ``update(scores (B, C) probabilities, targets (B, C) 0/1)``.

    ``metrics``: ``mAP`` (scikit-learn's AP per class, mean over classes with a positive),
    ``f1_micro``, ``f1_macro``, ``exact_match`` at ``threshold``; ``details``: ``per_class_ap``
    (class name → AP, NaN for a class without positives).
    """

    def __init__(self, classes: list[str], threshold: float = 0.5, prefix: str = "val") -> None:
        self.classes = list(classes)
        self.threshold = float(threshold)
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self._scores.append(predictions.detach().float().cpu().numpy())
        self._targets.append(targets.detach().float().cpu().numpy())

    def compute(self) -> EvalResult:
        c = len(self.classes)
        scores = np.concatenate(self._scores) if self._scores else np.zeros((0, c))
        targets = np.concatenate(self._targets) if self._targets else np.zeros((0, c))
        m = multilabel_metrics(scores, targets, self.threshold)
        per_class = dict(zip(self.classes, m.pop("per_class_ap")))
        metrics = {**self.loss_metrics(), **{self.key(k): v for k, v in m.items()}}
        width = max(16, *(len(n) for n in self.classes))
        lines = [f"{'class':<{width}} {'positives':>9} {'AP':>6}"]
        for name, n, ap in zip(self.classes, (targets > 0.5).sum(0), per_class.values()):
            lines.append(f"{name:<{width}} {int(n):>9} {fmt(ap, 3):>6}")
        lines.append(
            f"{'mAP':<{width}} {'':>9} {fmt(m['mAP'], 3):>6}  (AP as scikit-learn's "
            "average_precision_score; n/a: no positives, left out of the mean, where "
            "scikit-learn counts 0)"
        )
        return EvalResult(metrics, "\n".join(lines), {"per_class_ap": per_class})
