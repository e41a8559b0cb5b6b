"""The detection evaluator: VOC AP (all-point and 11-point) and COCO AP of a whole split.

Predictions arrive per batch in original-image pixels, keyed by image id; ``compute`` orders them
by the dataset's records (an image the loader had to skip keeps its objects, counted as missed)
and scores them against the annotations as read — not as the training transforms return them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.records import DetectionSet
from .base import EvalResult, Evaluator, fmt
from .coco import (
    COCO_STAT_NAMES,
    build_coco_gt,
    category_ids,
    coco_image_ids,
    default_backend,
    evaluate_coco,
    predictions_to_coco_results,
    write_results_json,
)
from .detection_plots import detection_confusion_matrix, plot_confusion_matrix, plot_pr_curves
from .voc import evaluate_voc

# COCO metrics worth a column in results.csv; the full table is in EvalResult.table.
COCO_LOGGED = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")


def _empty() -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.long),
    }


class DetectionEvaluator(Evaluator):
    """``update(predictions, image_ids)``: per image ``{"boxes": (N, 4) XYXY original pixels,
    "scores", "labels"}`` and the record's ``image_id``.

    ``metrics``: ``mAP<iou>`` (VOC all-point) and ``mAP<iou>_07`` (11-point), and with ``coco``
    the :data:`COCO_LOGGED` COCO numbers. ``details``: ``voc``, ``voc07`` (VOCResult), ``coco``
    (the 12 stats or None), ``images``. Files: ``coco_results.json`` (the dataset's own category
    ids), ``pr_curve.png``, ``confusion_matrix.png`` (at ``conf_thresh``).
    """

    def __init__(
        self,
        dataset: DetectionSet,
        iou_threshold: float = 0.5,
        conf_thresh: float = 0.25,
        coco: bool = True,
        coco_backend: str = "auto",
        prefix: str = "val",
    ) -> None:
        self.dataset = dataset
        self.classes = list(dataset.classes)
        self.iou_threshold = float(iou_threshold)
        self.conf_thresh = float(conf_thresh)
        self.coco = coco
        self.coco_backend = default_backend() if coco_backend == "auto" else coco_backend
        super().__init__(prefix)

    @property
    def metric(self) -> str:
        """The logged name of VOC mAP at this IoU (``val/mAP50``)."""
        return self.key(f"mAP{round(self.iou_threshold * 100)}")

    def reset(self) -> None:
        super().reset()
        self._by_id: dict[int, dict[str, torch.Tensor]] = {}

    def update(self, predictions: Sequence[dict[str, Any]], targets: Sequence[int]) -> None:
        self._by_id.update(zip((int(i) for i in targets), predictions))

    def predictions(self) -> list[dict[str, Any]]:
        """One prediction per record of the dataset, in record order (empty where none came)."""
        return [self._by_id.get(int(r.image_id), _empty()) for r in self.dataset.records]

    def compute(self) -> EvalResult:
        preds = self.predictions()
        records = self.dataset.records
        num_classes = len(self.classes)
        voc = evaluate_voc(preds, records, num_classes, self.iou_threshold)
        voc07 = evaluate_voc(preds, records, num_classes, self.iou_threshold, True)
        metrics = self.loss_metrics()
        metrics[self.metric] = voc.map
        metrics[f"{self.metric}_07"] = voc07.map
        coco = None
        image_ids = coco_image_ids(self.dataset)
        cats = category_ids(self.dataset)
        if self.coco:
            gt = build_coco_gt(self.dataset)  # once per evaluation, from the annotations as read
            results = predictions_to_coco_results(preds, image_ids, cats)
            coco = evaluate_coco(gt, results, backend=self.coco_backend)
            metrics.update({self.key(k): coco[k] for k in COCO_LOGGED})
        details = {"voc": voc, "voc07": voc07, "coco": coco, "images": len(preds)}

        def plot_pr(path: Path) -> None:
            plot_pr_curves(voc, self.classes, path)

        def plot_matrix(path: Path) -> None:
            matrix = detection_confusion_matrix(
                preds, records, num_classes, self.iou_threshold, self.conf_thresh
            )
            plot_confusion_matrix(matrix, self.classes, path)

        files = {
            "coco_results.json": lambda path: write_results_json(preds, image_ids, path, cats),
            "pr_curve.png": plot_pr,
            "confusion_matrix.png": plot_matrix,
        }
        return EvalResult(metrics, self._table(details), details, files)

    def _table(self, d: dict[str, Any]) -> str:
        """The VOC table (per class, 11-point and all-point) and the COCO table."""
        voc, voc07 = d["voc"], d["voc07"]
        width = max(12, *(len(c) for c in self.classes))
        lines = [
            f"VOC AP at IoU {voc.iou_threshold:.2f} on {d['images']} images",
            f"{'class':<{width}} {'objects':>8} {'dets':>7} {'TP':>6} {'11-point':>9} "
            f"{'all-point':>9}",
        ]
        for c, name in enumerate(self.classes):
            lines.append(
                f"{name:<{width}} {int(voc.num_gt[c]):>8} {int(voc.num_det[c]):>7} "
                f"{int(voc.num_tp[c]):>6} {fmt(voc07.ap[c]):>9} {fmt(voc.ap[c]):>9}"
            )
        lines.append(
            f"{'mAP':<{width}} {'':>8} {'':>7} {'':>6} {fmt(voc07.map):>9} {fmt(voc.map):>9}"
        )
        coco = d["coco"]
        if coco is not None:
            lines += ["", f"COCO ({self.coco_backend}; -1: no objects of that size)"]
            names = list(COCO_STAT_NAMES)
            for row in (names[:3], names[3:6], names[6:9], names[9:]):
                lines.append("  ".join(f"{n:>9} {coco[n]:6.3f}" for n in row))
        return "\n".join(lines)


__all__ = ["COCO_LOGGED", "DetectionEvaluator"]
