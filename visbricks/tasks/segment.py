"""``segment``: semantic segmentation, encoder → decoder (docs/architecture.md §1).

The bricks live elsewhere and are wired here: any registered backbone is the encoder (features at
strides 4–32), a decoder head (``unet``, ``fpn``, ``deeplabv3plus``, ``fcn`` in
``models.heads.segment``) gives logits at the input size; mask formats and augmentation are in
``data.formats.masks`` / ``data.segmentation``; the loss (CE with ignore index, class weights,
OHEM, Dice) in ``models.seg_losses``; the dataset-level confusion-matrix metrics in
``metrics.segmentation``; drawing in ``data.draw``.

Evaluation runs at the network's input resolution (letterboxed to ``img_size``, padding ignored),
like mmseg's "whole" mode on resized data; ``predict`` maps masks back to the original image.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import Dataset

from ..config import Config, section_kwargs
from ..data.collate import PAD_STRIDE, pad_collate
from ..data.draw import color, image_grid, overlay_mask
from ..data.formats import read_task_split
from ..data.formats.base import YAML_SUFFIXES
from ..data.formats.masks import SegmentationSet
from ..data.io import cache_budget, safe_join, write_image
from ..data.normalize import denormalize, to_image
from ..data.segmentation import (
    SegmentationDataset,
    build_segmentation_transforms,
    class_pixel_counts,
    median_frequency_weights,
)
from ..errors import ConfigError, DataError
from ..files import atomic_write_text
from ..metrics.segmentation import IGNORE_INDEX, SegmentationEvaluator
from ..models.seg_losses import SegmentationLoss
from ..registry import TASKS
from .base import DataBundle, Task

SEGMENT_YAML = "segment.yaml"  # the data YAML the shapes generator's masks are read through


@TASKS.register("segment")
class SegmentTask(Task):
    name = "segment"
    metric = "val/mIoU"
    metric_mode = "max"
    default_head = "unet"
    head_outputs = ("logits",)
    head_output_stride = 1  # per-pixel logits at the input size: any decoder that declares it
    head_kind = "segmentation decoder"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._sets: dict[str, SegmentationSet] = {}
        self._criterion: SegmentationLoss | None = None
        self._eval_transform = None

    # ---- data -------------------------------------------------------------------------------
    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        from ..data.synth.shapes import SHAPE_CLASSES, write_detection_at

        out = write_detection_at(kind, root, params, self.name, fmt="coco")
        spec = root if root.suffix in YAML_SUFFIXES else out / SEGMENT_YAML
        if not spec.is_file():
            # The generator's masks: 0 = background, k + 1 = shape class k.
            doc = {
                "format": "label_masks",
                "root": ".",
                "classes": ["background", *SHAPE_CLASSES],
                "ignore_index": IGNORE_INDEX,
                "train": {"images": "images/train", "masks": "masks/train"},
                "val": {"images": "images/val", "masks": "masks/val"},
            }
            # Atomic: a concurrent run reads a whole file or none.
            atomic_write_text(spec, yaml.safe_dump(doc, sort_keys=False))

    def _read(self, split: str) -> SegmentationSet:
        """The ``data.<split>`` split through the data layer's one path (format detection, split
        files or the seeded holdout, ``data.ignore_index``), cached."""
        cached = self._sets.get(split)
        if cached is not None:
            return cached
        d = self.cfg.data
        root = self.data_root
        name = getattr(d, split)
        classes = list(d.classes) if d.classes else None
        if classes is None and split != "train":
            # The model's list: numbered names counted from a val split's masks could be fewer.
            classes = self.classes
        ds = read_task_split(
            root, d.format, "segmentation", name, classes, d.strict, ignore_index=d.ignore_index
        )
        if ds.problems:
            import warnings

            file, reason = ds.problems[0]
            warnings.warn(
                f"{len(ds.problems)} problem(s) reading the {split} split of {root}, e.g. "
                f"{file}: {reason}; `visbricks data check {root}` lists them all",
                stacklevel=2,
            )
        if not any(r.mask_file for r in ds.records):
            raise DataError(f"the {split} split ({name!r}) of {root} has no images with masks")
        self._sets[split] = ds
        return ds

    @property
    def classes(self) -> list[str]:
        synth = dict(self.cfg.data.synth or {})
        if self._classes is None and not self.cfg.data.classes and synth:
            if not self.data_root.exists():
                # Known without generating: the generator's masks put background at 0.
                from ..data.synth import synth_classes

                self._classes = ["background", *synth_classes(synth.get("kind"))]
        return Task.classes.fget(self)

    def find_classes(self) -> list[str]:
        return list(self._read("train").classes)

    def _dataset(self, split: str, train: bool) -> SegmentationDataset:
        d = self.cfg.data
        transform = build_segmentation_transforms(
            self.img_size, train, dict(d.aug), mean=self.mean, std=self.std
        )
        ds = self._read(split)
        if list(ds.classes) != list(self.classes):
            raise DataError(
                f"the {split} split of {self.data_root} has classes {ds.classes}, the model "
                f"{self.classes}; give data.classes to fix one list"
            )
        return SegmentationDataset(
            ds, transform, strict=d.strict, cache=cache_budget(d.cache, d.get("cache_mb"))
        )

    def datasets(self) -> DataBundle:
        classes = self.classes
        train, val = self._dataset("train", True), self._dataset("val", False)
        return DataBundle(
            train,
            val,
            classes,
            collate_fn=partial(pad_collate, stride=PAD_STRIDE),
            info={"train": len(train), "val": len(val)},
        )

    def sample_files(self, n: int = 8, split: str = "val") -> list[Path]:
        """Up to ``n`` image files spread over a split (for demos; the data is prepared)."""
        ds = self._read(split)
        records = [r for r in ds.records if r.mask_file]
        step = max(1, len(records) // max(n, 1))
        return [safe_join(ds.root, r.file) for r in records[::step][:n]]

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(in_channels, strides, num_classes=len(self.classes))

    @property
    def criterion(self) -> SegmentationLoss:
        if self._criterion is None:
            loss = self.cfg.loss
            weights = loss.class_weights
            if weights == "median_freq":
                counts = class_pixel_counts(self._dataset("train", False), limit=500)
                weights = median_frequency_weights(counts)
            elif isinstance(weights, str):
                raise ConfigError(
                    f"loss.class_weights must be a list, 'median_freq' or null, got {weights!r}"
                )
            kwargs = section_kwargs(SegmentationLoss, loss, "loss", class_weights=weights)
            self._criterion = SegmentationLoss(len(self.classes), IGNORE_INDEX, **kwargs)
        return self._criterion

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return self.criterion(outputs["logits"], batch["semantic"])

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset: Dataset, split: str = "val") -> SegmentationEvaluator:
        return SegmentationEvaluator(self.classes, IGNORE_INDEX, prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs["logits"].argmax(1), batch["semantic"]

    # ---- drawing ------------------------------------------------------------------------------
    def legend(self, present: list[int] | None = None, width: int = 160) -> np.ndarray:
        """A colour key: one swatch + name per class (``present``: only those)."""
        from PIL import Image, ImageDraw

        ids = list(range(len(self.classes))) if present is None else present
        ids = [c for c in ids if c != 0 or not _is_background(self.classes[0])]
        row = 14
        im = Image.new("RGB", (width, max(row, row * len(ids)) + 4), (255, 255, 255))
        draw = ImageDraw.Draw(im)
        for i, c in enumerate(ids):
            y = 2 + i * row
            draw.rectangle((2, y, 14, y + 11), fill=color(c))
            draw.text((18, y), self.classes[c], fill=(0, 0, 0))
        return np.asarray(im)

    def _overlay(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        background = 0 if _is_background(self.classes[0]) else None
        return overlay_mask(image, mask, alpha=0.55, background=background)

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        n = min(8 if outputs is not None else 16, len(batch["image"]))
        images = [to_image(denormalize(x, self.mean, self.std)) for x in batch["image"][:n]]
        truth = [m.cpu().numpy() for m in batch["semantic"][:n]]
        tiles, titles = [], []
        if outputs is None:
            for im, gt in zip(images, truth):
                tiles.append(self._overlay(im, gt))
                titles.append("target")
        else:
            pred = outputs["logits"][:n].argmax(1).cpu().numpy()
            for im, gt, p in zip(images, truth, pred):
                valid = gt != IGNORE_INDEX
                acc = float((p[valid] == gt[valid]).mean()) if valid.any() else float("nan")
                tiles += [self._overlay(im, p), self._overlay(im, gt)]
                titles += [f"prediction (pixel acc {acc:.2f})", "target"]
        # Small inputs (the 64 px preset) are enlarged, pixel for pixel, to stay readable.
        k = max(1, 128 // max(tiles[0].shape[:2]))
        tiles = [t.repeat(k, 0).repeat(k, 1) for t in tiles]
        tiles.append(self.legend())
        titles.append("classes")
        write_image(path, image_grid(tiles, titles, cols=4))

    # ---- raw images (predict) -----------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"segment expects an RGB uint8 HWC image, got {image.dtype} {image.shape}"
            )
        if self._eval_transform is None:
            self._eval_transform = build_segmentation_transforms(
                self.img_size, False, dict(self.cfg.data.aug), mean=self.mean, std=self.std
            )
        from torchvision import tv_tensors

        from ..data.transforms import SemanticMask

        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dummy = SemanticMask(torch.zeros(image.shape[:2], dtype=torch.uint8))
        sample = self._eval_transform({"image": tv_tensors.Image(chw), "semantic": dummy})
        tensor = sample["image"].as_subclass(torch.Tensor)
        meta = {
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
            "letterbox": tuple(sample["letterbox"]),
        }
        return pad_collate([{"image": tensor}], stride=PAD_STRIDE)["image"][0], meta

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        logits = outputs["logits"].float()
        results = []
        for lg, m in zip(logits, meta):
            h, w = m["orig_size"]
            scale, pad_x, pad_y = m["letterbox"]
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            window = lg[:, pad_y : pad_y + nh, pad_x : pad_x + nw]
            full = F.interpolate(window[None], size=(h, w), mode="bilinear", align_corners=False)
            mask = full[0].argmax(0).to(torch.uint8).cpu().numpy()
            counts = np.bincount(mask.ravel(), minlength=len(self.classes))
            results.append(
                {
                    "pixels": {
                        self.classes[c]: round(float(counts[c]) / mask.size, 4)
                        for c in np.flatnonzero(counts)
                    },
                    "_mask": mask,
                }
            )
        return results

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """An (H, W) class map → RGB in the shared palette (ignore: white)."""
        lut = np.array([color(c) for c in range(256)], dtype=np.uint8)
        lut[IGNORE_INDEX] = 255
        return lut[mask]

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        """The overlay and the colour-mapped mask side by side, with a legend of the classes
        present."""
        mask = prediction["_mask"]
        overlay = self._overlay(image, mask)
        present = [int(c) for c in np.unique(mask)]
        legend = self.legend(present, width=min(160, max(80, image.shape[1] // 3)))
        h = image.shape[0]
        legend = legend[:h]
        legend = np.pad(legend, ((0, h - legend.shape[0]), (0, 0), (0, 0)), constant_values=255)
        return np.concatenate([overlay, self.colorize(mask), legend], axis=1)


def _is_background(name: str) -> bool:
    return name.strip("_").lower() in ("background", "bg")
