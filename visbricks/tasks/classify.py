"""``classify`` (one label per image, softmax) and ``multilabel`` (any number, sigmoid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.classification import (
    classification_transforms,
    csv_classes,
    csv_dataset,
    imagefolder_classes,
    imagefolder_dataset,
)
from ..data.normalize import denormalize, to_image
from ..deploy.draw import draw_caption
from ..engine.plots import save_image_grid
from ..errors import ConfigError
from ..metrics.classification import (
    confusion_matrix,
    multilabel_metrics,
    precision_recall_f1,
    topk_accuracy,
)
from ..registry import HEADS, TASKS
from .base import DataBundle, Task


@TASKS.register("classify")
class ClassifyTask(Task):
    name = "classify"
    metric = "val/top1"
    metric_mode = "max"
    multilabel = False

    # ---- data -------------------------------------------------------------------------------
    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        if kind != "shapes":
            raise ConfigError(f"data.synth.kind for {self.name} must be 'shapes', got {kind!r}")
        from ..data.synth.shapes import write_classification

        write_classification(root, **params)

    def _split_path(self, split: str) -> Path:
        return self.data_root / getattr(self.cfg.data, split)

    def find_classes(self) -> list[str]:
        fmt = self.cfg.data.format
        if fmt == "imagefolder":
            return imagefolder_classes(self._split_path("train"))
        if fmt == "csv":
            return csv_classes(self._split_path("train"))
        raise ConfigError(f"data.format for {self.name} must be imagefolder or csv, got {fmt!r}")

    def build_data(self) -> DataBundle:
        d = self.cfg.data
        classes = self.classes
        datasets = {}
        for split in ("train", "val"):
            transform = classification_transforms(
                self.img_size, self.mean, self.std, split == "train", dict(d.aug)
            )
            kwargs = dict(classes=classes, transform=transform, strict=d.strict, cache=d.cache)
            path = self._split_path(split)
            if d.format == "csv":
                datasets[split] = csv_dataset(path, **kwargs)
            else:
                datasets[split] = imagefolder_dataset(path, **kwargs)
        return DataBundle(datasets["train"], datasets["val"], classes)

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return HEADS.build(
            self.cfg.model.head, in_channels, len(self.classes), dropout=self.cfg.model.dropout
        )

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(
            outputs["logits"], batch["label"], label_smoothing=self.cfg.loss.label_smoothing
        )
        return {"loss": ce}

    # ---- evaluation ---------------------------------------------------------------------------
    def _collect(self, model: nn.Module, loader, device: torch.device):
        logits, targets, losses = [], [], []
        for batch in loader:
            batch = self.to_device(batch, device)
            out = self.forward(model, batch)
            losses.append(self.loss(out, batch)["loss"].item() * len(batch["image"]))
            logits.append(out["logits"].float().cpu())
            targets.append(batch["labels" if self.multilabel else "label"].cpu())
        n = sum(len(t) for t in targets)
        return torch.cat(logits), torch.cat(targets), sum(losses) / max(1, n)

    @torch.no_grad()
    def evaluate(self, model, loader, device, plots_dir=None) -> dict[str, float]:
        logits, targets, loss = self._collect(model, loader, device)
        metrics = {"val/loss": loss}
        topk = self.cfg.eval.topk
        metrics.update(
            {f"val/{k}": v for k, v in topk_accuracy(logits, targets, (1, topk)).items()}
        )
        matrix = confusion_matrix(logits.argmax(1).numpy(), targets.numpy(), len(self.classes))
        precision, recall, f1 = precision_recall_f1(matrix)
        metrics["val/f1_macro"] = float(f1.mean())
        self.last_report = {
            "confusion_matrix": matrix.tolist(),
            "per_class": {
                c: {"precision": float(p), "recall": float(r), "f1": float(f)}
                for c, p, r, f in zip(self.classes, precision, recall, f1)
            },
        }
        if plots_dir is not None:
            from ..metrics.detection_plots import plot_confusion_matrix

            plot_confusion_matrix(
                matrix, self.classes, Path(plots_dir) / "confusion_matrix.png", rows="true"
            )
        return metrics

    def format_report(self, metrics: dict) -> str:
        lines = ["class            precision  recall     f1"]
        for c, v in self.last_report["per_class"].items():
            lines.append(f"{c:<16} {v['precision']:9.3f} {v['recall']:7.3f} {v['f1']:6.3f}")
        return "\n".join(lines)

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

    def find_classes(self) -> list[str]:
        if self.cfg.data.format != "csv":
            raise ConfigError("data.format for multilabel must be csv (filename,labels)")
        return super().find_classes()

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["labels"]
        eps = self.cfg.loss.label_smoothing
        if eps:
            target = target * (1 - eps) + eps / 2
        return {"loss": F.binary_cross_entropy_with_logits(outputs["logits"], target)}

    @torch.no_grad()
    def evaluate(self, model, loader, device, plots_dir=None) -> dict[str, float]:
        logits, targets, loss = self._collect(model, loader, device)
        m = multilabel_metrics(logits.sigmoid().numpy(), targets.numpy(), self.cfg.eval.threshold)
        self.last_report = {"per_class_ap": dict(zip(self.classes, m.pop("per_class_ap")))}
        return {"val/loss": loss, **{f"val/{k}": v for k, v in m.items()}}

    def format_report(self, metrics: dict) -> str:
        return "\n".join(
            f"{c:<16} AP {ap:.3f}" for c, ap in self.last_report["per_class_ap"].items()
        )

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
