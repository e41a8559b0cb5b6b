"""The in-memory form every detection/segmentation format is read into and written from.

Boxes are absolute-pixel XYXY float32 (docs/architecture.md §4); class ids are 0..C-1 in
``classes`` order.
Format readers (VOC, COCO, YOLO) produce a :class:`DetectionSet`; writers consume one; datasets,
``data check``, ``data convert`` and the COCO/VOC evaluators all work on it, so a format is
converted exactly once, at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _boxes(n: int = 0) -> np.ndarray:
    return np.zeros((n, 4), dtype=np.float32)


@dataclass
class ImageRecord:
    file: str  # path relative to the dataset root, POSIX separators
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_boxes)  # (N, 4) float32 XYXY pixels
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,)
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,) VOC
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (N,) COCO
    # Per object: COCO polygon list, COCO RLE dict, or None. Kept for segmentation.
    segmentations: list[Any] = field(default_factory=list)
    # Optional path (relative to root) of a semantic mask PNG (class index per pixel, 255 ignore).
    mask_file: str | None = None
    image_id: int = 0
    # Evaluation only (COCO files): each object's box as annotated, before it was clipped to the
    # image for training, (N, 4) float64 XYXY, and the annotation's own ``area`` (NaN where the
    # file gives none). None: the same as ``boxes`` / no areas given. Official COCO numbers are
    # computed on these, so the COCO evaluator uses them.
    annotated_boxes: np.ndarray | None = None
    areas: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        if len(self.difficult) != n:
            self.difficult = np.zeros(n, dtype=bool)
        if len(self.iscrowd) != n:
            self.iscrowd = np.zeros(n, dtype=bool)
        self.difficult = np.asarray(self.difficult, dtype=bool)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool)
        if len(self.segmentations) != n:
            self.segmentations = [None] * n


@dataclass
class DetectionSet:
    root: Path  # folder the record paths are relative to
    classes: list[str]
    records: list[ImageRecord]
    # Problems found while reading: (file, reason). Readers never raise for one bad sample.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # The dataset's own id of each class (COCO ``category_id``), in ``classes`` order; None:
    # class c is category c + 1. Evaluation writes results with these ids.
    category_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for r in self.records:
            for label in r.labels:
                counts[self.classes[int(label)]] += 1
        return counts
