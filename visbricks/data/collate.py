"""Batching samples of different image sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .transforms import IGNORE_INDEX

# Every registered encoder's total stride: padded to a multiple of it, every feature map of the
# box and mask tasks has an integer size.
PAD_STRIDE = 32

# Per-object targets: their length differs between images, so they stay one entry per image.
_PER_IMAGE_KEYS = ("boxes", "labels", "masks")


def pad_collate(
    batch: Sequence[dict[str, Any]], stride: int = PAD_STRIDE, pad_value: float = 0.0
) -> dict[str, Any]:
    """Stack sample dicts into a batch, padding images bottom/right to a common size.

    The common size is the batch maximum rounded up to a multiple of ``stride`` (the model's
    total downsampling, so every feature map has an integer size). Padding only at the bottom and
    right leaves every pixel, box and mask coordinate where it was. Returns the sample keys with
    ``image`` as (B, C, H, W), ``boxes``/``labels``/``masks`` as per-image lists, a ``semantic``
    mask (if present) stacked and padded with the ignore index, ints and 0-d tensors as tensors,
    anything else as a list, plus ``image_sizes``: the un-padded (h, w) of every image.
    """
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    images = [s["image"] for s in batch]
    if any(im.dim() != 3 for im in images) or len({im.shape[0] for im in images}) != 1:
        shapes = [tuple(im.shape) for im in images]
        raise ValueError(f"pad_collate needs CHW images with one channel count, got {shapes}")
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    height = math.ceil(max(h for h, _ in sizes) / stride) * stride
    width = math.ceil(max(w for _, w in sizes) / stride) * stride

    out: dict[str, Any] = {"image": _pad_stack(images, height, width, pad_value)}
    for key in batch[0]:
        if key == "image":
            continue
        values = [s[key] for s in batch]
        if key in _PER_IMAGE_KEYS:
            out[key] = _one_storage(values)
        elif key == "semantic":
            out[key] = _pad_stack(values, height, width, IGNORE_INDEX)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values):
            out[key] = torch.stack(values)
        else:
            out[key] = values
    out["image_sizes"] = sizes
    return out


def _one_storage(tensors: list[Any]) -> list[Any]:
    """The per-image tensors as views into one tensor, where their dtype and trailing shape agree.

    A batch crosses from a loader worker to the training process one shared-memory segment per
    tensor storage; 2 × batch-size tiny box and label tensors cost ~10 ms per batch there
    (measured on detect-shapes: median wait 11 ms → 2.3 ms per batch, data wait 3.4 % → 1.9 %).
    Views of one storage travel as one segment. The values and the list are unchanged.
    """
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors):
        return tensors
    first = tensors[0]
    if any(t.dtype != first.dtype or t.shape[1:] != first.shape[1:] for t in tensors):
        return tensors
    if any(type(t) is not torch.Tensor for t in tensors):  # tv_tensors keep their metadata
        return tensors
    return list(torch.cat(tensors).split([len(t) for t in tensors]))


def _pad_stack(
    tensors: Sequence[torch.Tensor], height: int, width: int, value: float
) -> torch.Tensor:
    first = tensors[0]
    batch = first.new_full((len(tensors), *first.shape[:-2], height, width), value)
    for dst, src in zip(batch, tensors):
        dst[..., : src.shape[-2], : src.shape[-1]].copy_(src)
    return batch
