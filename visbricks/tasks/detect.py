"""``detect``: many objects per image with an SSD-style detector (docs/architecture.md §1).

The bricks live elsewhere and are only wired here: anchors (``ops.anchors``), box coding
(``ops.box_coder``), matching and the MultiBox/focal loss (``models.losses``), the SSD head and
its post-processing, VOC AP (``metrics.voc``) and COCO AP (``metrics.coco``). One
:class:`BoxCoder` instance serves the loss and inference, so the two cannot disagree on
variances. Box data, letterboxing and drawing are the box roles (``tasks/roles/boxes.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, section_kwargs
from ..data.records import DetectionSet
from ..errors import ConfigError
from ..metrics.base import EvalResult
from ..metrics.detection import DetectionEvaluator
from ..models.losses import ASSIGNERS, BOX_LOSSES, CLS_LOSSES, SIGMOID_LOSSES, SSDLoss
from ..models.postprocess import ssd_postprocess
from ..ops.anchors import AnchorGenerator, anchors_from_config
from ..ops.box_coder import BoxCoder
from ..registry import TASKS
from .base import Task
from .roles.boxes import BoxData, BoxPredictor, detection_set, loader_dataset  # noqa: F401

__all__ = ["BoxTask", "DetectTask", "detection_set", "loader_dataset"]


class BoxTask(BoxData, BoxPredictor, Task):
    """What ``detect`` and ``locate`` share: the box data and predictor roles."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.head_name  # noqa: B018  (a head without this task's outputs is named now)
        self._sets = {}
        self._eval_transform = None


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
            ("loss.assigner", loss.assigner, ASSIGNERS),
        ):
            if value not in choices:
                raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        self.focal = loss.cls_loss in SIGMOID_LOSSES  # sigmoid scores: bias init, decoding
        # The one coder the loss encodes with and inference decodes with.
        self.box_coder = BoxCoder(tuple(cfg.model.box_variances))
        self._criterion: SSDLoss | None = None
        self.anchor_generator: AnchorGenerator | None = None  # build_head's, for the assigner
        # VOC AP's IoU names the metric, so train.metric=null still finds it.
        self.metric = f"val/mAP{round(cfg.eval.iou_threshold * 100)}"

    # ---- bricks and loss ----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        anchors = anchors_from_config(self.cfg.model.anchors, self.img_size, len(in_channels))
        if self.cfg.loss.assigner == "atss":
            anchors.level_shapes()  # refuses clipped anchors and levels sharing a shape, now
        self.anchor_generator = anchors
        return self.make_head(
            in_channels, strides, num_classes=len(self.classes), anchor_generator=anchors,
            prior_prob=self.cfg.model.prior_prob, focal=self.focal,
        )  # fmt: skip

    @property
    def criterion(self) -> SSDLoss:
        if self._criterion is None:
            given = {}
            if self.cfg.loss.assigner == "atss":
                if self.anchor_generator is None:
                    raise ConfigError("loss.assigner=atss: build the model before the loss")
                # A pure function of the anchor config, so it serves copies of the model too.
                given["level_counts"] = self.anchor_generator.level_counts
            kwargs = section_kwargs(SSDLoss, self.cfg.loss, "loss", **given)
            self._criterion = SSDLoss(len(self.classes), self.box_coder, **kwargs)
        return self._criterion

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        targets = [{"boxes": b, "labels": c} for b, c in zip(batch["boxes"], batch["labels"])]
        out = self.criterion(outputs, targets)
        return {
            "loss": out["loss"],
            "loss_cls": out["cls"].detach(),
            "loss_box": out["box"].detach(),
            "num_pos": out["num_pos"],
        }

    # ---- decoding -----------------------------------------------------------------------------
    def decode(
        self, outputs: dict, input_sizes: list[tuple[int, int]], score_thresh: float
    ) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes`` (network-input pixels), ``scores``, ``labels``: top-k, NMS."""
        e = self.cfg.eval
        return ssd_postprocess(
            outputs, self.box_coder, input_sizes, score_thresh=score_thresh,
            nms_thresh=e.nms_thresh, max_detections=e.max_detections,
            topk_candidates=e.topk_candidates, focal=self.focal,
        )  # fmt: skip

    def detections(
        self,
        outputs: dict,
        input_sizes: list[tuple[int, int]],
        letterboxes: list[tuple[float, float, float]],
        orig_sizes: list[tuple[int, int]],
        score_thresh: float,
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (N, 4) XYXY original-image pixels, ``scores``, ``labels`` (CPU)."""
        out = []
        raw = self.decode(outputs, input_sizes, score_thresh)
        for det, letterbox, orig in zip(raw, letterboxes, orig_sizes):
            boxes = self.to_original(det["boxes"], letterbox, orig)
            # A box lying wholly in the letterbox padding has no area once clipped to the image.
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            scores, labels = det["scores"].float().cpu()[keep], det["labels"].cpu()[keep]
            out.append({"boxes": boxes[keep], "scores": scores, "labels": labels})
        return out

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset: Any, split: str = "val") -> DetectionEvaluator:
        """VOC and COCO AP against the annotations of ``dataset`` (a DetectionDataset, or the
        DetectionSet itself) as read."""
        if not isinstance(dataset, DetectionSet):
            dataset = detection_set(dataset, self.name)
        e = self.cfg.eval
        return DetectionEvaluator(
            dataset, iou_threshold=e.iou_threshold, conf_thresh=e.conf_thresh, coco=e.coco,
            coco_backend=e.coco_backend, prefix=split,
        )  # fmt: skip

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[list[dict], list[int]]:
        """Per image its detections in original-image pixels, and its record's image id."""
        b = batch
        sizes, boxes, orig = b["image_sizes"], b["letterbox"], b["orig_size"]
        dets = self.detections(outputs, sizes, boxes, orig, self.cfg.eval.score_thresh)
        return dets, b["image_id"].tolist()

    def score(
        self, predictions: list[dict], dataset: DetectionSet, plots_dir: Path | None = None
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
        dets = self.decode(sliced, batch["image_sizes"][:n], self.cfg.eval.conf_thresh)
        texts = [
            [f"{self.classes[int(c)]} {s:.2f}" for c, s in zip(d["labels"], d["scores"].tolist())]
            for d in dets
        ]
        titles = [f"{len(d['boxes'])} detections ({len(b)} objects)" for d, b in
                  zip(dets, truth_boxes)]  # fmt: skip
        boxes, labels = [d["boxes"] for d in dets], [d["labels"] for d in dets]
        self._grid(batch, path, boxes, labels, texts, titles)

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        sizes = [m["input_size"] for m in meta]
        boxes, orig = [m["letterbox"] for m in meta], [m["orig_size"] for m in meta]
        dets = self.detections(outputs, sizes, boxes, orig, self.cfg.eval.conf_thresh)
        rows = [zip(d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist()) for d in dets]
        return [{"detections": [self._json_box(*row) for row in r]} for r in rows]

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return self._draw_json(image, prediction["detections"])
