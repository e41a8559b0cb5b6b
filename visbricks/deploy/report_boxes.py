"""Error views of the box tasks (``locate``, ``detect``) for the run report.

Each validation image's predictions are sorted into true positives, false positives, poor
localisations (IoU with an object of their class in [0.1, 0.5)), wrong classes and duplicates,
and its objects into found and missed (``metrics/errors.box_errors``); images are ranked by
their number of errors and drawn on the original pixels the evaluator scored: truth as thick
boxes (green found, orange missed), predictions as thin ones coloured by kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.draw import draw_boxes
from ..data.io import read_image, safe_join
from ..data.records import DetectionSet
from ..metrics.base import EvalResult
from ..metrics.errors import LOW_IOU, BoxErrors, box_errors
from ..ops.boxes import elementwise_iou
from ..tasks.detect import detection_set
from ..tasks.locate import largest_boxes
from .report_views import LIMIT, ErrorView, Gallery, Item, Worst, fit

# Palette indices (data/draw.PALETTE) of each kind: one colour per meaning, as the legend says.
TRUTH, MISSED = 1, 4  # green, orange
KIND_COLOR = {"tp": 3, "fp": 0, "duplicate": 0, "wrong_class": 5, "poor": 2}  # blue, red, purple,
# yellow
LEGEND = (
    "Truth: thick boxes, green when found, orange when missed. Predictions: thin boxes, blue "
    "correct, red false positive (or duplicate), yellow poor localisation "
    f"(IoU {LOW_IOU}–0.5 with an object of its class), purple wrong class."
)


def prediction_kinds(errors: BoxErrors, n: int) -> list[str]:
    """The kind of each of ``n`` predictions: tp, poor, wrong_class, duplicate or fp."""
    kinds = ["fp"] * n
    for p, _ in errors.tp:
        kinds[p] = "tp"
    for p, _, _ in errors.poor:
        kinds[p] = "poor"
    for p, _ in errors.wrong_class:
        kinds[p] = "wrong_class"
    for p in errors.duplicate:
        kinds[p] = "duplicate"
    return kinds


def draw_errors(
    image: np.ndarray,
    classes: list[str],
    pred: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    errors: BoxErrors,
) -> np.ndarray:
    """Truth then predictions on ``image`` (original pixels), in the styles of :data:`LEGEND`."""
    image, scale = fit(image, 256)
    missed = sorted(errors.missed)
    found = [i for i in range(len(truth["boxes"])) if i not in set(missed)]
    boxes = np.asarray(truth["boxes"], np.float32).reshape(-1, 4) * scale
    out = draw_boxes(image, boxes[found], [TRUTH] * len(found), width=4)
    texts = [f"missed {classes[int(truth['labels'][i])]}" for i in missed]
    out = draw_boxes(out, boxes[missed], [MISSED] * len(missed), texts=texts, width=4)
    kinds = prediction_kinds(errors, len(pred["boxes"]))
    poor = {p: iou for p, _, iou in errors.poor}
    texts = []
    for i, (c, s, kind) in enumerate(zip(pred["labels"], pred["scores"], kinds)):
        text = classes[int(c)] + (f" {float(s):.2f}" if s == s else "")  # NaN: no score
        prefix = {"fp": "FP ", "duplicate": "dup ", "wrong_class": "class? "}.get(kind, "")
        texts.append(prefix + text + (f" IoU {poor[i]:.2f}" if kind == "poor" else ""))
    colors = [KIND_COLOR[k] for k in kinds]
    return draw_boxes(out, pred["boxes"] * scale, colors, texts=texts, width=2)


def box_record(
    classes: list[str],
    file: str,
    pred: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    errors: BoxErrors,
) -> dict[str, Any]:
    """The JSON record of one image: its counts, every prediction with its kind and every
    object with whether it was found (boxes XYXY in original pixels)."""
    kinds = prediction_kinds(errors, len(pred["boxes"]))
    missed = set(errors.missed)
    return {
        "file": file,
        **errors.counts(),
        "predictions": [
            {
                "label": classes[int(c)],
                "score": round(float(s), 4) if s == s else None,
                "box": [round(float(v), 1) for v in b],
                "kind": k,
            }
            for b, c, s, k in zip(pred["boxes"], pred["labels"], pred["scores"], kinds)
        ],
        "truth": [
            {
                "label": classes[int(c)],
                "box": [round(float(v), 1) for v in b],
                "found": i not in missed,
            }
            for i, (b, c) in enumerate(zip(truth["boxes"], truth["labels"]))
        ],
    }


class BoxView(ErrorView):
    """Shared by the box views: the annotations as read, images ranked by their errors."""

    what = "objects"

    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        self.set: DetectionSet = detection_set(dataset, task.name)
        self.classes = list(task.classes)
        self.worst = Worst(limit)
        self.totals = {"images": 0, "false_positives": 0, "poor_localisations": 0, "missed": 0}

    def offer(self, index: int, pred: dict, truth: dict, errors: BoxErrors, extra: float) -> None:
        counts = errors.counts()
        self.totals["images"] += 1
        for k in ("false_positives", "poor_localisations", "missed"):
            self.totals[k] += counts[k]
        record_ = self.set.records[index]
        file = safe_join(self.set.root, record_.file)
        record = {"index": index, **box_record(self.classes, str(file), pred, truth, errors)}

        def draw() -> np.ndarray:
            return draw_errors(read_image(file), self.classes, pred, truth, errors)

        title = (
            f"{errors.errors} errors: {counts['false_positives']} FP, "
            f"{counts['poor_localisations']} poor, {counts['missed']} missed"
        )
        self.worst.offer(errors.errors + extra, lambda: Item(title, record, draw))

    def galleries(self, result: EvalResult) -> list[Gallery]:
        t = self.totals
        note = (
            f"{LEGEND} Sorted by errors, most first. Over {t['images']} images: "
            f"{t['false_positives']} false positives, {t['poor_localisations']} poor "
            f"localisations, {t['missed']} missed {self.what}."
        )
        return [Gallery("box-errors", "Images by errors", note, self.worst.items())]


class DetectView(BoxView):
    """Detections at ``eval.conf_thresh`` (the operating point of predict and the confusion
    matrix, not AP's low threshold) against every annotated object."""

    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        self.index_of = {int(r.image_id): i for i, r in enumerate(self.set.records)}
        self.conf = float(task.cfg.eval.conf_thresh)
        self.match = float(task.cfg.eval.iou_threshold)

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        for det, image_id in zip(predictions, targets):
            index = self.index_of[int(image_id)]
            keep = det["scores"] >= self.conf
            pred = {k: det[k][keep].detach().cpu().numpy() for k in ("boxes", "labels", "scores")}
            rec = self.set.records[index]
            truth = {"boxes": np.asarray(rec.boxes).reshape(-1, 4), "labels": rec.labels}
            errors = box_errors(
                pred["boxes"],
                pred["labels"],
                pred["scores"],
                truth["boxes"],
                truth["labels"],
                self.match,
            )
            if errors.errors:
                self.offer(index, pred, truth, errors, 0.0)


class LocateView(BoxView):
    """The one predicted box against the image's largest object (what ``locate`` learns);
    equal error counts rank by lower IoU."""

    what = "largest objects"

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        _, _, valid = largest_boxes(batch["boxes"], batch["labels"])
        indices = [start + int(i) for i in torch.nonzero(valid).flatten().tolist()]
        boxes_p = predictions["boxes"].detach().float().cpu()
        boxes_t = targets["boxes"].detach().float().cpu()
        ious = elementwise_iou(boxes_p, boxes_t).tolist()  # the batch's pairs at once
        for j, index in enumerate(indices):
            pred = {
                "boxes": boxes_p[j : j + 1].numpy(),
                "labels": predictions["labels"][j : j + 1].cpu().numpy(),
                "scores": np.full(1, np.nan, np.float32),  # locate's pairs carry no score
            }
            truth = {
                "boxes": boxes_t[j : j + 1].numpy(),
                "labels": targets["labels"][j : j + 1].cpu().numpy(),
            }
            errors = box_errors(
                pred["boxes"], pred["labels"], pred["scores"], truth["boxes"], truth["labels"]
            )
            self.offer(index, pred, truth, errors, (1.0 - ious[j]) / 2)
