"""Classification metrics from accumulated logits: top-k, per-class P/R/F1, confusion matrix,
and for multi-label: mAP over classes and F1 at a threshold."""

from __future__ import annotations

import numpy as np
import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> dict:
    out = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        hit = (logits.topk(k_eff, dim=1).indices == targets[:, None]).any(dim=1)
        out[f"top{k}"] = hit.float().mean().item()
    return out


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
    """Non-interpolated AP of one class: mean precision at the rank of each positive.

    Equals sklearn's ``average_precision_score`` when scores have no ties.
    """
    if positives.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(float)
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_k * hits).sum() / hits.sum())


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    """mAP over classes that have positives; micro and macro F1 at ``threshold``."""
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
