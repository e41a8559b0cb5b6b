"""``detect``: many objects per image with an SSD-style detector (docs/architecture.md §1).

The bricks live elsewhere and are only wired here: anchors (``ops.anchors``), box coding
(``ops.box_coder``), matching and the MultiBox/focal loss (``models.losses``), the SSD head and
its post-processing, VOC AP (``metrics.voc``) and COCO AP through pycocotools
(``metrics.coco``). One :class:`BoxCoder` instance serves the loss and inference, so the two
cannot disagree on variances.

:class:`BoxTask` holds what ``detect`` and ``locate`` share: box datasets read from a data YAML
(or a COCO JSON / VOC / YOLO root) into :class:`~visbricks.data.detection.DetectionDataset`, the
box-aware augmentation, padding collate, letterboxing of raw images for ``predict`` and the
mapping of boxes back to original-image pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors

from ..config import Config, section_kwargs
from ..data.collate import PAD_STRIDE, pad_collate
from ..data.detection import DetectionDataset
from ..data.draw import draw_boxes
from ..data.formats import read_task_split
from ..data.io import cache_budget, safe_join
from ..data.normalize import denormalize, to_image
from ..data.records import DetectionSet
from ..data.samplers import GroupedBatchSampler
from ..data.transforms import build_detection_transforms, unletterbox_boxes
from ..engine.plots import save_image_grid
from ..errors import ConfigError, DataError
from ..metrics.base import EvalResult
from ..metrics.coco import coco_image_ids
from ..metrics.detection import DetectionEvaluator
from ..models.losses import BOX_LOSSES, CLS_LOSSES, SSDLoss
from ..models.postprocess import ssd_postprocess
from ..ops.anchors import AnchorGenerator, default_ssd_sizes
from ..ops.box_coder import BoxCoder
from ..registry import TASKS
from .base import DataBundle, Task

# Batches are padded to a multiple of this: the total stride of every registered backbone, so
# each feature map has an integer size whatever the image size.


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


class BoxTask(Task):
    """Data, letterboxing and drawing shared by the box tasks (``detect``, ``locate``)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head_name  # noqa: B018  (a head without this task's outputs is named now)
        self._sets: dict[str, DetectionSet] = {}
        self._eval_transform = None

    # ---- data -------------------------------------------------------------------------------
    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        from ..data.synth.shapes import write_detection_at

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
        ds = replace(ds, classes=list(ds.classes), records=records)
        self._sets[split] = ds
        return ds

    def find_classes(self) -> list[str]:
        return list(self._read("train", None).classes)

    def datasets(self) -> DataBundle:
        classes = self.classes
        d = self.cfg.data
        datasets = {}
        for split in ("train", "val"):
            transform = build_detection_transforms(
                self.img_size, split == "train", dict(d.aug), mean=self.mean, std=self.std
            )
            datasets[split] = DetectionDataset(
                self._read(split, classes),
                transform,
                strict=d.strict,
                cache=cache_budget(d.cache, d.cache_mb),
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
        records = self._read(split, self.classes).records
        step = max(1, len(records) // max(n, 1))
        root = self._sets[split].root
        return [safe_join(root, r.file) for r in records[::step][:n]]

    # ---- raw images (predict) -----------------------------------------------------------------
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

    # ---- drawing ----------------------------------------------------------------------------
    def _display(self, batch: dict, n: int) -> list[np.ndarray]:
        return [to_image(denormalize(x, self.mean, self.std)) for x in batch["image"][:n]]

    def _grid(
        self,
        batch: dict,
        path: Path,
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        texts: list[list[str]],
        titles: list[str],
    ) -> None:
        n = len(boxes)
        save_image_grid(
            self._display(batch, n),
            path,
            titles=titles,
            boxes=[b.detach().cpu().float().numpy().reshape(-1, 4) for b in boxes],
            box_labels=texts,
            box_colors=[[int(c) for c in lab.tolist()] for lab in labels],
        )


@TASKS.register("detect")
class DetectTask(BoxTask):
    name = "detect"
    default_head = "ssd"
    head_outputs = ("cls_logits", "box_deltas", "anchors")
    metric = "val/mAP50"
    metric_mode = "max"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        loss = cfg.loss
        for key, value, choices in (
            ("loss.box_loss", loss.box_loss, BOX_LOSSES),
            ("loss.cls_loss", loss.cls_loss, CLS_LOSSES),
        ):
            if value not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        self.focal = loss.cls_loss == "focal"
        # The one coder the loss encodes with and inference decodes with.
        self.box_coder = BoxCoder(tuple(cfg.model.box_variances))
        self._criterion: SSDLoss | None = None
        # VOC AP's IoU names the metric, so train.metric=null still finds it.
        self.metric = f"val/mAP{round(cfg.eval.iou_threshold * 100)}"

    @property
    def criterion(self) -> SSDLoss:
        if self._criterion is None:
            kwargs = section_kwargs(SSDLoss, self.cfg.loss, "loss")
            self._criterion = SSDLoss(len(self.classes), self.box_coder, **kwargs)
        return self._criterion

    # ---- model ------------------------------------------------------------------------------
    def anchor_generator(self, num_levels: int) -> AnchorGenerator:
        """Anchors of ``model.anchors`` for a model predicting from ``num_levels`` feature maps."""
        a = self.cfg.model.anchors
        ratios = a.aspect_ratios
        if ratios and all(isinstance(r, (int, float)) for r in ratios):
            ratios = [ratios]  # one flat list: the same ratios on every level
        if len(ratios) == 1:
            ratios = list(ratios) * num_levels
        if len(ratios) != num_levels:
            raise ConfigError(
                f"model.anchors.aspect_ratios has {len(ratios)} lists but the model predicts "
                f"from {num_levels} feature maps; give one list for all levels or one per level"
            )
        if a.sizes is None:
            sizes = default_ssd_sizes(self.img_size, num_levels, a.smin, a.smax)
        else:
            sizes = [[s] if isinstance(s, (int, float)) else list(s) for s in a.sizes]
            if len(sizes) != num_levels:
                raise ConfigError(
                    f"model.anchors.sizes has {len(sizes)} levels but the model predicts from "
                    f"{num_levels} feature maps (the neck's outputs); give one list per level"
                )
        return AnchorGenerator(sizes, ratios, clip=a.clip)

    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        m = self.cfg.model
        return self.make_head(
            in_channels,
            strides,
            num_classes=len(self.classes),
            anchor_generator=self.anchor_generator(len(in_channels)),
            prior_prob=m.prior_prob,
            focal=self.focal,
        )

    # ---- training ---------------------------------------------------------------------------
    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        targets = [{"boxes": b, "labels": c} for b, c in zip(batch["boxes"], batch["labels"])]
        out = self.criterion(outputs, targets)
        return {
            "loss": out["loss"],
            "loss_cls": out["cls"].detach(),
            "loss_box": out["box"].detach(),
            "num_pos": out["num_pos"],
        }

    def detections(
        self,
        outputs: dict,
        input_sizes: list[tuple[int, int]],
        letterboxes: list[tuple[float, float, float]],
        orig_sizes: list[tuple[int, int]],
        score_thresh: float,
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (N, 4) XYXY original-image pixels, ``scores``, ``labels`` (CPU)."""
        e = self.cfg.eval
        raw = ssd_postprocess(
            outputs,
            self.box_coder,
            input_sizes,
            score_thresh=score_thresh,
            nms_thresh=e.nms_thresh,
            max_detections=e.max_detections,
            topk_candidates=e.topk_candidates,
            focal=self.focal,
        )
        out = []
        for det, letterbox, orig in zip(raw, letterboxes, orig_sizes):
            boxes = self.to_original(det["boxes"], letterbox, orig)
            # A box lying wholly in the letterbox padding has no area once clipped to the image.
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out.append(
                {
                    "boxes": boxes[keep],
                    "scores": det["scores"].float().cpu()[keep],
                    "labels": det["labels"].cpu()[keep],
                }
            )
        return out

    # ---- evaluation -------------------------------------------------------------------------
    def evaluator(self, dataset: Any, split: str = "val") -> DetectionEvaluator:
        """VOC and COCO AP against the annotations of ``dataset`` (a DetectionDataset, or the
        DetectionSet itself) as read."""
        if not isinstance(dataset, DetectionSet):
            dataset = detection_set(dataset, self.name)
        e = self.cfg.eval
        return DetectionEvaluator(
            dataset,
            iou_threshold=e.iou_threshold,
            conf_thresh=e.conf_thresh,
            coco=e.coco,
            coco_backend=e.coco_backend,
            prefix=split,
        )

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[list[dict], list[int]]:
        """Per image its detections in original-image pixels, and its record's image id."""
        dets = self.detections(
            outputs,
            batch["image_sizes"],
            batch["letterbox"],
            batch["orig_size"],
            self.cfg.eval.score_thresh,
        )
        return dets, batch["image_id"].tolist()

    def score(
        self,
        predictions: list[dict[str, torch.Tensor]],
        dataset: DetectionSet,
        plots_dir: Path | None = None,
    ) -> EvalResult:
        """The evaluation of original-pixel ``predictions``, one per record of ``dataset``."""
        evaluator = self.evaluator(dataset)
        evaluator.update(predictions, [int(r.image_id) for r in dataset.records])
        result = evaluator.compute()
        if plots_dir is not None:
            result.plots(plots_dir)
        return result

    # ---- drawing and prediction ---------------------------------------------------------------
    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        n = min(16, len(batch["image"]))
        truth_boxes, truth_labels = batch["boxes"][:n], batch["labels"][:n]
        if outputs is None:
            texts = [[self.classes[int(c)] for c in lab] for lab in truth_labels]
            titles = [f"{len(b)} objects" for b in truth_boxes]
            self._grid(batch, path, truth_boxes, truth_labels, texts, titles)
            return
        sliced = {k: (v if k == "anchors" else v[:n]) for k, v in outputs.items()}
        e = self.cfg.eval
        dets = ssd_postprocess(
            sliced,
            self.box_coder,
            batch["image_sizes"][:n],
            score_thresh=e.conf_thresh,
            nms_thresh=e.nms_thresh,
            max_detections=e.max_detections,
            topk_candidates=e.topk_candidates,
            focal=self.focal,
        )
        texts = [
            [f"{self.classes[int(c)]} {s:.2f}" for c, s in zip(d["labels"], d["scores"].tolist())]
            for d in dets
        ]
        titles = [
            f"{len(d['boxes'])} detections ({len(b)} objects)" for d, b in zip(dets, truth_boxes)
        ]
        self._grid(
            batch, path, [d["boxes"] for d in dets], [d["labels"] for d in dets], texts, titles
        )

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        dets = self.detections(
            outputs,
            [m["input_size"] for m in meta],
            [m["letterbox"] for m in meta],
            [m["orig_size"] for m in meta],
            self.cfg.eval.conf_thresh,
        )
        return [
            {
                "detections": [
                    self._json_box(box, int(c), float(s))
                    for box, c, s in zip(
                        d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist()
                    )
                ]
            }
            for d in dets
        ]

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return self._draw_json(image, prediction["detections"])
