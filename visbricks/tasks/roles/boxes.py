"""The data and predictor roles of the box tasks (``detect``, ``locate``).

Data: box datasets read through the data layer's one path (``read_task_split``: a data YAML, or
a COCO / VOC / YOLO root) into :class:`~visbricks.data.detection.DetectionDataset`, with the
box-aware augmentation, padding collate and aspect-ratio grouped batches. Predictor: letterboxing
of raw images, boxes mapped back to original-image pixels, COCO-style JSON records and drawings.
A box task adds only its head, loss, decoding (``decode``) and evaluator.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

from ...config import Config
from ...data.bundle import DataBundle
from ...data.collate import PAD_STRIDE, pad_collate
from ...data.detection import DetectionDataset
from ...data.draw import draw_boxes
from ...data.formats import read_task_split
from ...data.io import cache_budget, safe_join
from ...data.normalize import denormalize, to_image
from ...data.records import DetectionSet
from ...data.samplers import GroupedBatchSampler
from ...data.transforms import build_detection_transforms, resolve_aug, unletterbox_boxes
from ...engine.plots import save_image_grid
from ...errors import ConfigError, DataError
from ...metrics.coco import coco_image_ids
from .data import DataRole
from .predict import PredictorRole


def grouped_batch_sampler(
    dataset: DetectionDataset, batch_size: int, generator: torch.Generator
) -> GroupedBatchSampler:
    """``DataBundle.batch_sampler`` factory: portrait and landscape images in separate batches."""
    return GroupedBatchSampler(
        dataset.aspect_ratios(),
        batch_size,
        drop_last=len(dataset) > batch_size,
        generator=generator,
    )


def loader_dataset(loader: Any, task: str) -> DetectionSet:
    """The annotations behind a DataLoader over a DetectionDataset, for exact evaluation."""
    return detection_set(getattr(loader, "dataset", None), task)


def detection_set(dataset: Any, task: str) -> DetectionSet:
    """The annotations behind a DetectionDataset, for exact evaluation."""
    if not isinstance(dataset, DetectionDataset):
        raise ConfigError(
            f"{task} evaluation needs a DataLoader over a DetectionDataset (metrics are computed "
            f"against the annotations as read), got {type(dataset).__name__}"
        )
    return dataset.dataset


class BoxData(DataRole):
    """Box datasets: generated shapes, or any box format the data layer reads. The task's
    ``__init__`` sets ``_sets = {}`` (the splits as read)."""

    cfg: Config
    _sets: dict[str, DetectionSet]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        from ...data.synth.shapes import write_detection_at

        write_detection_at(kind, root, params, self.name)

    def _read(self, split: str, classes: list[str] | None) -> DetectionSet:
        """The ``data.<split>`` split as annotated, with unique image ids (cached)."""
        cached = self._sets.get(split)
        if cached is not None and (classes is None or cached.classes == list(classes)):
            return cached
        d = self.cfg.data
        root = self.data_root
        name = getattr(d, split)
        ds = read_task_split(root, d.format, "detection", name, classes, d.strict)
        if ds.problems:
            file, reason = ds.problems[0]
            warnings.warn(
                f"{len(ds.problems)} problem(s) reading the {split} split of {root} (objects or "
                f"images skipped or repaired), e.g. {file}: {reason}; "
                f"`visbricks data check {root}` lists them all",
                stacklevel=2,
            )
        if not ds.records:
            raise DataError(f"the {split} split ({name!r}) of {root} has no images")
        # VOC and YOLO readers leave every image_id at 0. Evaluation maps predictions back to
        # records by id, so give each record the id its COCO ground truth will use.
        ids = coco_image_ids(ds)
        records = [replace(r, image_id=i) for r, i in zip(ds.records, ids)]
        self._sets[split] = replace(ds, classes=list(ds.classes), records=records)
        return self._sets[split]

    def find_classes(self) -> list[str]:
        return list(self._read("train", None).classes)

    def datasets(self) -> DataBundle:
        classes, d = self.classes, self.cfg.data
        datasets = {}
        aug = resolve_aug(dict(d.aug))
        for split in ("train", "val"):
            transform = build_detection_transforms(
                self.img_size, split == "train", dict(d.aug), mean=self.mean, std=self.std
            )
            datasets[split] = DetectionDataset(
                self._read(split, classes),
                transform,
                strict=d.strict,
                cache=cache_budget(d.cache, d.cache_mb),
                mosaic=aug["mosaic"] if split == "train" else 0.0,
                mosaic_size=self.img_size,
                close_mosaic=aug["close_mosaic"],
            )
        return DataBundle(
            datasets["train"],
            datasets["val"],
            classes,
            collate_fn=partial(pad_collate, stride=PAD_STRIDE),
            batch_sampler=grouped_batch_sampler if d.group_aspect_ratio else None,
            info={split: len(ds) for split, ds in datasets.items()},
        )

    def sample_files(self, n: int = 8, split: str = "val") -> list[Path]:
        """Up to ``n`` image files spread over a split (for demos; the data is prepared)."""
        ds = self._read(split, self.classes)
        step = max(1, len(ds.records) // max(n, 1))
        return [safe_join(ds.root, r.file) for r in ds.records[::step][:n]]


class BoxPredictor(PredictorRole):
    """Raw images letterboxed in, boxes in original-image pixels out, drawn. The task's
    ``__init__`` sets ``_eval_transform = None`` (built on first use)."""

    cfg: Config
    _eval_transform: Any
    classes: list[str]
    name: str
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"{self.name} expects an RGB uint8 HWC image, got {image.dtype} {image.shape}"
            )
        if self._eval_transform is None:
            self._eval_transform = build_detection_transforms(
                self.img_size, False, dict(self.cfg.data.aug), mean=self.mean, std=self.std
            )
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        sample = self._eval_transform({"image": tv_tensors.Image(chw)})
        tensor = sample["image"].as_subclass(torch.Tensor)
        meta = {
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
            "letterbox": tuple(sample["letterbox"]),
            "input_size": (int(tensor.shape[-2]), int(tensor.shape[-1])),
        }
        # Padded bottom/right to the stride exactly as pad_collate pads evaluation batches.
        return pad_collate([{"image": tensor}], stride=PAD_STRIDE)["image"][0], meta

    @staticmethod
    def to_original(
        boxes: torch.Tensor, letterbox: tuple[float, float, float], orig_size: tuple[int, int]
    ) -> torch.Tensor:
        """Letterboxed-canvas XYXY boxes → original-image pixels, clipped to the image."""
        scale, pad_x, pad_y = letterbox
        return unletterbox_boxes(boxes.detach().float().cpu(), scale, pad_x, pad_y, orig_size)

    def _json_box(self, box: list[float], label: int, score: float) -> dict[str, Any]:
        # COCO result style (bbox = x, y, width, height; category_id = class + 1) plus the name.
        x1, y1, x2, y2 = box
        return {
            "label": self.classes[label],
            "category_id": label + 1,
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(score, 4),
        }

    def _draw_json(self, image: np.ndarray, detections: list[dict[str, Any]]) -> np.ndarray:
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in detections)])
        labels = [d["category_id"] - 1 for d in detections]
        scores = [d["score"] for d in detections]
        return draw_boxes(image, boxes.reshape(-1, 4), labels, self.classes, scores)

    def _grid(
        self,
        batch: dict,
        path: Path,
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        texts: list[list[str]],
        titles: list[str],
    ) -> None:
        """The first ``len(boxes)`` images of ``batch`` with ``boxes`` drawn, in one PNG."""
        n = len(boxes)
        save_image_grid(
            [to_image(denormalize(x, self.mean, self.std)) for x in batch["image"][:n]],
            path,
            titles=titles,
            boxes=[b.detach().cpu().float().numpy().reshape(-1, 4) for b in boxes],
            box_labels=texts,
            box_colors=[[int(c) for c in lab.tolist()] for lab in labels],
        )
