"""``classify`` (one label per image, softmax) and ``multilabel`` (any number, sigmoid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.classification import ClassificationSet, classification_transforms
from ..data.draw import draw_caption
from ..data.formats import read_task_split
from ..data.io import cache_budget
from ..data.normalize import denormalize, to_image
from ..engine.plots import save_image_grid
from ..errors import ConfigError
from ..metrics.classification import ClassificationEvaluator, MultiLabelEvaluator
from ..registry import TASKS
from .base import DataBundle, Task


@TASKS.register("classify")
class ClassifyTask(Task):
    name = "classify"
    default_head = "linear"
    head_outputs = ("logits",)
    metric = "val/top1"
    metric_mode = "max"
    multilabel = False

    # ---- data -------------------------------------------------------------------------------
    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        if kind != "shapes":
            raise ConfigError(f"data.synth.kind for {self.name} must be 'shapes', got {kind!r}")
        from ..data.synth.shapes import write_classification

        write_classification(root, **params)

    def _read(self, split: str, classes: list[str] | None) -> ClassificationSet:
        """``data.<split>`` through the data layer's one path (a data YAML's split, a split
        folder or CSV, or the seeded holdout of one undivided set)."""
        d = self.cfg.data
        name = getattr(d, split)
        ds = read_task_split(self.data_root, d.format, "classification", name, classes, d.strict)
        if self.multilabel and not ds.multilabel:
            raise ConfigError(f"data.format for {self.name} must be csv (filename,labels)")
        return ds

    def find_classes(self) -> list[str]:
        return list(self._read("train", None).classes)

    def datasets(self) -> DataBundle:
        d = self.cfg.data
        classes = self.classes
        datasets = {}
        for split in ("train", "val"):
            transform = classification_transforms(
                self.img_size, self.mean, self.std, split == "train", dict(d.aug)
            )
            datasets[split] = self._read(split, classes).dataset(
                transform=transform, strict=d.strict, cache=cache_budget(d.cache, d.cache_mb)
            )
        return DataBundle(datasets["train"], datasets["val"], classes)

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(
            in_channels, strides, num_classes=len(self.classes), dropout=self.cfg.model.dropout
        )

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(
            outputs["logits"], batch["label"], label_smoothing=self.cfg.loss.label_smoothing
        )
        return {"loss": ce}

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset, split: str = "val") -> ClassificationEvaluator:
        return ClassificationEvaluator(self.classes, self.cfg.eval.topk, prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs["logits"], batch["label"]

    # ---- drawing and prediction ---------------------------------------------------------------
    def _titles(self, batch: dict, outputs: dict | None) -> list[str]:
        truth = [self.classes[int(i)] for i in batch["label"]]
        if outputs is None:
            return truth
        pred = outputs["logits"].argmax(1).tolist()
        return [f"{self.classes[p]} (true: {t})" for p, t in zip(pred, truth)]

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        images = [to_image(denormalize(x, self.mean, self.std)) for x in batch["image"][:16]]
        save_image_grid(images, path, titles=self._titles(batch, outputs))

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        transform = classification_transforms(
            self.img_size, self.mean, self.std, False, dict(self.cfg.data.aug)
        )
        return transform(torch.from_numpy(image).permute(2, 0, 1)), {}

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        probs = outputs["logits"].float().softmax(1)
        k = min(self.cfg.eval.topk, probs.shape[1])
        top = probs.topk(k, dim=1)
        return [
            {
                "label": self.classes[int(idx[0])],
                "score": float(p[0]),
                "topk": [
                    {"label": self.classes[int(i)], "score": float(s)} for i, s in zip(idx, p)
                ],
            }
            for p, idx in zip(top.values, top.indices)
        ]

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return draw_caption(image, f"{prediction['label']} {prediction['score']:.2f}")


@TASKS.register("multilabel")
class MultiLabelTask(ClassifyTask):
    name = "multilabel"
    metric = "val/mAP"
    multilabel = True

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["labels"]
        eps = self.cfg.loss.label_smoothing
        if eps:
            target = target * (1 - eps) + eps / 2
        return {"loss": F.binary_cross_entropy_with_logits(outputs["logits"], target)}

    def evaluator(self, dataset, split: str = "val") -> MultiLabelEvaluator:
        return MultiLabelEvaluator(self.classes, self.cfg.eval.threshold, prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs["logits"].float().sigmoid(), batch["labels"]

    def _names(self, row: torch.Tensor, threshold: float) -> str:
        return " ".join(c for c, v in zip(self.classes, row.tolist()) if v >= threshold) or "-"

    def _titles(self, batch: dict, outputs: dict | None) -> list[str]:
        truth = [self._names(t, 0.5) for t in batch["labels"]]
        if outputs is None:
            return truth
        pred = [self._names(p, self.cfg.eval.threshold) for p in outputs["logits"].sigmoid()]
        return [f"{p}\n(true: {t})" for p, t in zip(pred, truth)]

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        probs = outputs["logits"].float().sigmoid()
        thr = self.cfg.eval.threshold
        return [
            {
                "labels": [c for c, p in zip(self.classes, row.tolist()) if p >= thr],
                "scores": {c: float(p) for c, p in zip(self.classes, row.tolist())},
            }
            for row in probs
        ]

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return draw_caption(image, " ".join(prediction["labels"]) or "-")
