"""Detection / instance-mask Dataset over a :class:`DetectionSet`.

Each item is ``{"image": float CHW, "boxes": float (N, 4) XYXY, "labels": int64 (N,),
"image_id": int, "orig_size": (h, w), "letterbox": (scale, pad_x, pad_y), "masks"?: uint8
(N, H, W)}`` in the coordinates of the transformed image. A sample that cannot be read is warned
about, counted and replaced by the next readable one (``strict=True`` raises instead), so one bad
file does not end a long training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ..errors import DataError
from .io import DecodeCache, image_size, read_image, safe_join
from .mosaic import mosaic4
from .records import DetectionSet, ImageRecord
from .report import first_readable
from .rle import decode

Sample = dict[str, Any]


class DetectionDataset(Dataset):
    """``transform`` takes and returns the sample dict of :mod:`visbricks.data.transforms`
    (e.g. from ``build_detection_transforms``); ``None`` only scales the image to 0..1.

    ``cache`` keeps decoded uint8 images in memory (``True``, or a byte budget: see
    :class:`~visbricks.data.io.DecodeCache`): decoding dominates small-image training on few
    cores. The cache, ``num_skipped`` and ``bad_files`` live in each DataLoader worker process
    separately.
    """

    def __init__(
        self,
        dataset: DetectionSet,
        transform: Callable[[Sample], Sample] | None = None,
        *,
        with_masks: bool = False,
        strict: bool = False,
        cache: bool | int = False,
        mosaic: float = 0.0,
        mosaic_size: tuple[int, int] | None = None,
        close_mosaic: int = 0,
    ) -> None:
        if mosaic > 0 and mosaic_size is None:
            raise ValueError("mosaic > 0 needs mosaic_size, the (height, width) of one mosaic")
        self.dataset = dataset
        self.transform = transform
        # Probability that an item is a 2x2 mosaic of it and three random others (data.mosaic);
        # built before ``transform``, which then augments and letterboxes it like any image.
        self.mosaic = mosaic
        self.mosaic_size = mosaic_size
        self.close_mosaic = close_mosaic  # epochs; the CloseMosaic callback sets mosaic to 0
        self.with_masks = with_masks
        self.strict = strict
        self.cache = DecodeCache(cache)
        self.num_skipped = 0  # how many times a bad sample was replaced
        self.bad_files: dict[str, str] = {}  # record file -> reason

    def __len__(self) -> int:
        return len(self.dataset.records)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def aspect_ratios(self) -> list[float]:
        """width / height of every record, from the annotations (the header when they lack it)."""
        ratios = []
        for record in self.dataset.records:
            width, height = record.width, record.height
            if width <= 0 or height <= 0:
                width, height = image_size(safe_join(self.dataset.root, record.file))
            ratios.append(width / height)
        return ratios

    def __getitem__(self, index: int) -> Sample:
        records = self.dataset.records
        sample = first_readable(self, index, records, self._load, self.dataset.root)
        if self.mosaic > 0 and float(torch.rand(())) < self.mosaic:
            others = torch.randint(len(records), (3,)).tolist()
            four = [sample] + [
                first_readable(self, j, records, self._load, self.dataset.root) for j in others
            ]
            sample = mosaic4(four, self.mosaic_size)  # type: ignore[arg-type]  (set: __init__)
        return self._finish(sample)

    def _read(self, i: int, record: ImageRecord) -> np.ndarray:
        return self.cache.get(i, lambda: read_image(safe_join(self.dataset.root, record.file)))

    def _load(self, i: int, record: ImageRecord) -> Sample:
        image = self._read(i, record)
        height, width = image.shape[:2]
        # One copy into a fresh CHW array: transforms can never write into the cached image.
        chw = torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))
        sample: Sample = {
            "image": tv_tensors.Image(chw),
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes.copy()), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.from_numpy(record.labels.copy()),
            "image_id": int(record.image_id),
            "orig_size": (height, width),
        }
        if self.with_masks:
            sample["masks"] = tv_tensors.Mask(
                torch.from_numpy(instance_masks(record, height, width))
            )
        return sample

    def _finish(self, sample: Sample) -> Sample:
        meta = {"image_id": sample.pop("image_id"), "orig_size": sample.pop("orig_size")}
        if self.transform is not None:
            sample = self.transform(sample)
        image = sample["image"]
        if not image.is_floating_point():
            image = F.to_dtype(image, torch.float32, scale=True)
        out: Sample = {
            "image": image.as_subclass(torch.Tensor),
            "boxes": sample["boxes"].as_subclass(torch.Tensor).float(),
            "labels": sample["labels"].long(),
            "image_id": meta["image_id"],
            "orig_size": meta["orig_size"],
            "letterbox": tuple(sample.get("letterbox", (1.0, 0, 0))),
        }
        if "masks" in sample:
            out["masks"] = sample["masks"].as_subclass(torch.Tensor)
        return out


def instance_masks(record: ImageRecord, height: int, width: int) -> np.ndarray:
    """(N, height, width) uint8 masks from COCO polygons or RLE (compressed or not).

    DataError names the file and object when a segmentation is missing or malformed.
    """
    masks = np.zeros((len(record.boxes), height, width), dtype=np.uint8)
    for k, seg in enumerate(record.segmentations):
        where = f"object {k} of {record.file}"
        if seg is None:
            raise DataError(f"{where} has no segmentation; with_masks needs one per object")
        try:
            masks[k] = _decode_segmentation(seg, height, width)
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise DataError(f"{where}: malformed segmentation ({err})") from None
    return masks


def _decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    return decode(seg, height, width)  # the one implementation: data/rle.py
