"""``locate``: one object per image — its box and its class (docs/architecture.md §1).

The data pipeline is detection's (:class:`~visbricks.tasks.detect.BoxTask`): the target of an
image is its largest box after augmentation. The loss is L1 on the box corners, in fractions of
the input size so that ``loss.cls_weight`` (λ) means the same at every image size, plus λ times
the cross-entropy of the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_area

from ..config import Config
from ..errors import ConfigError
from ..metrics.localization import LocalizationEvaluator
from ..registry import TASKS
from .detect import BoxTask, detection_set


def largest_boxes(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, its largest box (the first one on a tie) and that box's class.

    Returns ``boxes`` (B, 4), ``labels`` (B,) and ``valid`` (B,) bool; an image without boxes
    (none annotated, or all cropped away by augmentation) has ``valid`` False and zeros.
    """
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    out_boxes = torch.zeros(len(boxes), 4, device=device)
    out_labels = torch.zeros(len(boxes), dtype=torch.long, device=device)
    valid = torch.zeros(len(boxes), dtype=torch.bool, device=device)
    for i, (b, c) in enumerate(zip(boxes, labels)):
        if len(b):
            k = int(box_area(b.float()).argmax())
            out_boxes[i], out_labels[i], valid[i] = b[k], c[k], True
    return out_boxes, out_labels, valid


@TASKS.register("locate")
class LocateTask(BoxTask):
    name = "locate"
    default_head = "locate"
    head_outputs = ("boxes", "logits")
    metric = "val/iou"
    metric_mode = "max"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        if cfg.loss.cls_weight < 0:
            raise ConfigError(f"loss.cls_weight must be >= 0, got {cfg.loss.cls_weight}")

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        m = self.cfg.model
        return self.make_head(
            in_channels,
            strides,
            num_classes=len(self.classes),
            hidden=m.box_hidden,
            pool=m.box_pool,
            dropout=m.dropout,
        )

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target, labels, valid = largest_boxes(batch["boxes"], batch["labels"])
        pred, logits = outputs["boxes"], outputs["logits"]
        if not valid.any():
            # Nothing to learn from this batch; a zero that keeps the graph lets backward() run.
            zero = pred.sum() * 0.0 + logits.sum() * 0.0
            return {"loss": zero, "loss_box": zero.detach(), "loss_cls": zero.detach()}
        height, width = batch["image"].shape[-2:]
        scale = pred.new_tensor([width, height, width, height])
        box = F.l1_loss(pred[valid] / scale, target[valid].to(pred.dtype) / scale)
        cls = F.cross_entropy(logits[valid].float(), labels[valid])
        loss = box + self.cfg.loss.cls_weight * cls
        return {"loss": loss, "loss_box": box.detach(), "loss_cls": cls.detach()}

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset, split: str = "val") -> LocalizationEvaluator:
        detection_set(dataset, self.name)  # a clear error for a dataset of anything else
        return LocalizationEvaluator(self.classes, prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[dict, dict]:
        """The largest object of each image that has one, predicted and true, both in
        original-image pixels: the prediction is clipped to the image there, not to the
        letterbox canvas."""
        target, labels, valid = largest_boxes(batch["boxes"], batch["labels"])
        keep = torch.nonzero(valid).flatten().tolist()
        pred, true = [], []
        for i in keep:
            lb, orig = batch["letterbox"][i], batch["orig_size"][i]
            pred.append(self.to_original(outputs["boxes"][i], lb, orig).reshape(4))
            true.append(self.to_original(target[i], lb, orig).reshape(4))
        empty = torch.zeros(0, 4)
        predictions = {
            "boxes": torch.stack(pred) if pred else empty,
            "labels": outputs["logits"][valid].argmax(1).cpu(),
        }
        targets = {"boxes": torch.stack(true) if true else empty, "labels": labels[valid].cpu()}
        return predictions, targets

    # ---- drawing and prediction ---------------------------------------------------------------
    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        n = min(16, len(batch["image"]))
        target, labels, valid = largest_boxes(batch["boxes"][:n], batch["labels"][:n])
        truth = [self.classes[int(c)] if v else "-" for c, v in zip(labels, valid)]
        if outputs is None:
            boxes = [target[i : i + 1][valid[i : i + 1]] for i in range(n)]
            labs = [labels[i : i + 1][valid[i : i + 1]] for i in range(n)]
            texts = [[t] if v else [] for t, v in zip(truth, valid)]
            self._grid(batch, path, boxes, labs, texts, truth)
            return
        probs = outputs["logits"][:n].detach().float().softmax(1).cpu()
        score, pred = probs.max(1)
        boxes = [outputs["boxes"][i : i + 1] for i in range(n)]
        labs = [pred[i : i + 1] for i in range(n)]
        texts = [[f"{self.classes[int(p)]} {float(s):.2f}"] for p, s in zip(pred, score)]
        titles = [f"{self.classes[int(p)]} (true: {t})" for p, t in zip(pred, truth)]
        self._grid(batch, path, boxes, labs, texts, titles)

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        probs = outputs["logits"].detach().float().softmax(1).cpu()
        score, pred = probs.max(1)
        out = []
        for i, m in enumerate(meta):
            box = self.to_original(outputs["boxes"][i], m["letterbox"], m["orig_size"])[0]
            out.append(self._json_box(box.tolist(), int(pred[i]), float(score[i])))
        return out

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return self._draw_json(image, [prediction])
