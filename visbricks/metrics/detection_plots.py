"""Precision-recall curves and confusion matrices for detection (and classification) runs.

Figures are drawn on ``matplotlib.figure.Figure`` objects directly, never through pyplot: no GUI
backend is touched and no global figure state leaks between training epochs or threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DataError
from .voc import VOCResult, ground_truth_arrays, pairwise_iou, prediction_arrays

_MAX_LEGEND_CLASSES = 20  # beyond this a per-class legend covers the plot
_MAX_ANNOTATED_CELLS = 30  # beyond this per-cell numbers are unreadable


def _envelope(precision: np.ndarray) -> np.ndarray:
    # Best precision at this recall or beyond: the monotone curve VOC AP integrates.
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def _envelope_on_grid(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    env = _envelope(precision)
    idx = np.searchsorted(recall, grid, side="left")
    out = np.zeros(len(grid))
    reached = idx < len(env)
    out[reached] = env[idx[reached]]
    return out


def plot_pr_curves(voc_result: VOCResult, class_names: Sequence[str], path: str | Path) -> Path:
    """Save the precision-recall curve of every annotated class and their mean to ``path``.

    Each class is drawn as its precision envelope, whose area is its all-point AP; the thick curve
    is the mean envelope over classes with ground truth, labelled with the result's mAP. Classes
    without ground truth have no recall and are left out.
    """
    if len(class_names) != len(voc_result.ap):
        raise ConfigError(
            f"{len(class_names)} class names given for a result with {len(voc_result.ap)} classes"
        )
    from matplotlib.figure import Figure  # here, not on import (engine/plots.py says why)

    fig = Figure(figsize=(8, 6), dpi=120, layout="constrained")
    ax = fig.subplots()
    grid = np.linspace(0.0, 1.0, 101)
    mean_curve = []
    per_class_legend = len(class_names) <= _MAX_LEGEND_CLASSES
    for c, name in enumerate(class_names):
        if voc_result.num_gt[c] == 0:
            continue
        rec, prec = voc_result.recall[c], voc_result.precision[c]
        mean_curve.append(_envelope_on_grid(rec, prec, grid))
        if rec.size == 0:
            continue
        env = _envelope(prec)
        # steps-pre: precision env[i] holds on the recall interval (rec[i-1], rec[i]].
        ax.plot(
            np.concatenate(([0.0], rec)),
            np.concatenate((env[:1], env)),
            drawstyle="steps-pre",
            linewidth=1,
            label=f"{name} {voc_result.ap[c]:.3f}" if per_class_legend else None,
        )
    if mean_curve:
        ax.plot(
            grid,
            np.mean(mean_curve, axis=0),
            linewidth=3,
            color="blue",
            label=f"all classes mAP@{voc_result.iou_threshold:g} {voc_result.map:.3f}",
        )
    kind = "11-point" if voc_result.use_07_metric else "all-point"
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"Precision-recall (VOC AP, {kind})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _match_one_to_one(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, highest IoU first, ignoring classes (a match of two different
    classes is exactly what a confusion matrix is for)."""
    det, gt = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[det, gt], kind="stable")
    used_det, used_gt, pairs = set(), set(), []
    for d, g in zip(det[order].tolist(), gt[order].tolist()):
        if d not in used_det and g not in used_gt:
            used_det.add(d)
            used_gt.add(g)
            pairs.append((d, g))
    return pairs


def detection_confusion_matrix(
    predictions: Sequence[Any],
    gts: Sequence[Any],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """(C+1, C+1) counts, ``matrix[predicted, true]`` as in Ultralytics; index C is background.

    Per image, the predictions scoring >= ``score_threshold`` are matched one-to-one to the ground
    truths, highest IoU first, at IoU >= ``iou_threshold`` whatever the classes. Then:

    - a matched pair adds 1 at ``[pred class, true class]`` (the diagonal when the classes agree);
    - an unmatched prediction adds 1 at ``[pred class, C]`` (background column: a false positive);
    - an unmatched ground truth adds 1 at ``[C, true class]`` (background row: a missed object).

    As in VOC AP, ``difficult`` ground truths count neither way: a prediction matched to one is
    dropped and a missed one is not an error. ``matrix[C, C]`` is always 0.
    """
    if len(predictions) != len(gts):
        raise DataError(f"{len(predictions)} prediction entries for {len(gts)} ground-truth images")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    bg = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for i, (pred, gt) in enumerate(zip(predictions, gts)):
        pboxes, plabels, pscores = prediction_arrays(pred, num_classes, f"predictions[{i}]")
        gboxes, glabels, gdiff = ground_truth_arrays(gt, num_classes, f"gts[{i}]")
        keep = pscores >= score_threshold
        pboxes, plabels = pboxes[keep], plabels[keep]
        pairs = []
        if len(pboxes) and len(gboxes):
            pairs = _match_one_to_one(pairwise_iou(pboxes, gboxes), iou_threshold)
        det_matched = np.zeros(len(pboxes), dtype=bool)
        gt_matched = np.zeros(len(gboxes), dtype=bool)
        for d, g in pairs:
            det_matched[d] = gt_matched[g] = True
            if not gdiff[g]:
                matrix[plabels[d], glabels[g]] += 1
        np.add.at(matrix, (plabels[~det_matched], bg), 1)
        np.add.at(matrix, (bg, glabels[~gt_matched & ~gdiff]), 1)
    return matrix


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    background: bool | None = None,
    rows: Literal["predicted", "true"] = "predicted",
    title: str = "Confusion matrix",
) -> Path:
    """Save a confusion matrix image, for detection (with background) or classification.

    ``rows`` says what the first index is: ``"predicted"`` (``matrix[pred, true]``, the orientation
    of :func:`detection_confusion_matrix`) or ``"true"`` (scikit-learn's). ``background``: whether
    the last row/column is background; by default it is when there is one more row than class
    names. ``normalize`` divides each true class by its count, so the diagonal reads as recall.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"a confusion matrix must be square, got shape {m.shape}")
    if rows not in ("predicted", "true"):
        raise ConfigError(f"rows must be 'predicted' or 'true', got {rows!r}")
    n = m.shape[0]
    if background is None:
        background = n == len(class_names) + 1
    labels = list(class_names) + (["background"] if background else [])
    if len(labels) != n:
        raise ConfigError(
            f"{len(class_names)} class names{' + background' if background else ''} "
            f"for a {n}x{n} confusion matrix"
        )
    true_axis = 0 if rows == "predicted" else 1  # the axis to sum over to count each true class
    if normalize:
        totals = m.sum(axis=true_axis, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)

    size = max(6.0, 0.45 * n + 2.0)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size, size * 0.85), dpi=120, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), labels, rotation=90)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("True" if rows == "predicted" else "Predicted")
    ax.set_ylabel("Predicted" if rows == "predicted" else "True")
    ax.set_title(title + (" (normalized per true class)" if normalize else ""))
    if n <= _MAX_ANNOTATED_CELLS:
        threshold = m.max() / 2 if m.size else 0
        for r in range(n):
            for c in range(n):
                if m[r, c] == 0:
                    continue
                text = f"{m[r, c]:.2f}" if normalize else f"{int(m[r, c])}"
                color = "white" if m[r, c] > threshold else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=7, color=color)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
