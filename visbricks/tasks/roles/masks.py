"""The data and predictor roles of the segment task.

Data: mask datasets through the data layer's one path (``read_task_split``: label_masks,
voc_masks, coco_masks, segnet; split files or the seeded holdout; ``data.ignore_index``), the
mask-aware augmentation, padding collate; the shapes generator's masks read through a written
data YAML. Predictor: a raw image letterboxed in, logits back on the original image (letterbox
removed), class shares, overlays with a colour key, the class-index PNG ``predict`` writes.

Mapping logits back to the original image is :func:`original_class_map`, the one function both
``predict`` and evaluation at the original resolution (``eval.resolution: original``) use, so a
split's score from ``predict``'s index masks is the score ``eval`` prints.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ...config import Config
from ...data.bundle import DataBundle
from ...data.collate import PAD_STRIDE, pad_collate
from ...data.draw import color, image_grid, overlay_mask
from ...data.formats import read_task_split
from ...data.formats.base import YAML_SUFFIXES
from ...data.formats.masks import SegmentationSet
from ...data.io import cache_budget, safe_join, write_image
from ...data.normalize import denormalize, to_image
from ...data.segmentation import (
    SegmentationDataset,
    build_segmentation_transforms,
    warn_stray_labels,
)
from ...data.transforms import resized_hw
from ...errors import DataError
from ...files import atomic_write_text
from ...metrics.segmentation import IGNORE_INDEX
from .data import DataRole
from .predict import PredictorRole

SEGMENT_YAML = "segment.yaml"  # the data YAML the shapes generator's masks are read through
MASKS_FOLDER = "masks"  # predict's sub-folder of class-index PNGs, named as the drawings


def original_class_map(
    logits: torch.Tensor, orig_size: tuple[int, int], letterbox: tuple[float, int, int]
) -> torch.Tensor:
    """(C, H, W) logits of one letterboxed input → the (h, w) class map of its original image.

    The letterbox window is cut out (padding dropped), resized bilinearly to the original size
    (``align_corners=False``, as mmseg resizes logits) and argmax'd: uint8 when the class ids fit,
    else int32. One image at a time, so only one original-size logit map is ever held.
    """
    h, w = orig_size
    scale, pad_x, pad_y = letterbox
    nh, nw = resized_hw(h, w, scale)  # the letterbox's own rounding of the resized size
    window = logits[:, pad_y : pad_y + nh, pad_x : pad_x + nw].float()
    if tuple(window.shape[1:]) != (h, w):
        window = F.interpolate(window[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int32
    return window.argmax(0).to(dtype)


class MaskData(DataRole):
    """Mask datasets. The task's ``__init__`` sets ``_sets = {}`` (the splits as read)."""

    cfg: Config
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _sets: dict[str, SegmentationSet]

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        from ...data.synth.shapes import SHAPE_CLASSES, write_detection_at

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
            # Name what went wrong: every mask skipped (say, all the wrong size) reads as
            # "no masks" otherwise.
            why = ""
            if ds.problems:
                file, reason = ds.problems[0]
                why = f" ({len(ds.problems)} problem(s), e.g. {file}: {reason})"
            raise DataError(
                f"the {split} split ({name!r}) of {root} has no usable images with masks{why}"
            )
        warn_stray_labels(ds, f"the {split} split of {root}", strict=bool(d.strict))
        self._sets[split] = ds
        return ds

    @property
    def classes(self) -> list[str]:
        synth = dict(self.cfg.data.synth or {})
        if self._classes is None and not self.cfg.data.classes and synth:
            if not self.data_root.exists():
                # Known without generating: the generator's masks put background at 0.
                from ...data.synth import synth_classes

                self._classes = ["background", *synth_classes(synth.get("kind"))]
        return DataRole.classes.fget(self)

    def find_classes(self) -> list[str]:
        return list(self._read("train").classes)

    @property
    def eval_resolution(self) -> str:
        """``eval.resolution``: what validation and ``visbricks eval`` score. ``original``
        (default): each image's class map at its own size against its label map as read;
        ``network``: the letterboxed network output against the label resized (nearest) to
        ``img_size``, the cheaper figure, not comparable with published numbers."""
        return str(self.cfg.eval.resolution)

    @property
    def eval_size(self) -> tuple[int, int]:
        """(height, width) an image is letterboxed to for evaluation and ``predict``: img_size,
        unless a test-time augmentation needs a larger input to resize from."""
        return self.img_size

    def _dataset(
        self, split: str, train: bool, size: tuple[int, int] | None = None
    ) -> SegmentationDataset:
        """``split`` with training augmentation (``train``) or the evaluation letterbox, at
        ``size`` (default: img_size for training, eval_size for evaluation)."""
        d = self.cfg.data
        size = size or (self.img_size if train else self.eval_size)
        transform = build_segmentation_transforms(
            size, train, dict(d.aug), mean=self.mean, std=self.std
        )
        ds = self._read(split)
        if list(ds.classes) != list(self.classes):
            raise DataError(
                f"the {split} split of {self.data_root} has classes {ds.classes}, the model "
                f"{self.classes}; give data.classes to fix one list"
            )
        return SegmentationDataset(
            ds,
            transform,
            strict=d.strict,
            cache=cache_budget(d.cache, d.get("cache_mb")),
            # Only an evaluation split needs the untransformed labels (eval.resolution).
            keep_original=not train and self.eval_resolution == "original",
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


class MaskPredictor(PredictorRole):
    """Letterboxed in, class maps on the original image out, drawn. The task's ``__init__``
    sets ``_eval_transform = None`` (built on first use)."""

    cfg: Config
    classes: list[str]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _eval_transform: object

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

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(
                f"segment expects an RGB uint8 HWC image, got {image.dtype} {image.shape}"
            )
        if self._eval_transform is None:
            self._eval_transform = build_segmentation_transforms(
                self.eval_size, False, dict(self.cfg.data.aug), mean=self.mean, std=self.std
            )
        from torchvision import tv_tensors

        from ...data.transforms import SemanticMask

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
        results = []
        for lg, m in zip(outputs["logits"], meta):
            mask = original_class_map(lg, m["orig_size"], m["letterbox"]).cpu().numpy()
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

    def index_map(self, prediction: dict) -> tuple[str, np.ndarray]:
        """``predict``'s class-index image: (sub-folder, the (H, W) class map at the original
        image's size), written there as a PNG of the drawing's name."""
        return MASKS_FOLDER, prediction["_mask"]

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
