"""Box- and mask-aware augmentation built on ``torchvision.transforms.v2``.

A sample is a dict::

    {"image": tv_tensors.Image (uint8 CHW), "boxes": tv_tensors.BoundingBoxes (XYXY),
     "labels": int64 Tensor (N,), optional "masks": tv_tensors.Mask (N, H, W),
     optional "semantic": tv_tensors.Mask (H, W)}

v2 moves the image, boxes and masks together, so every geometric step here is a v2 transform or
a thin wrapper of one; the only geometry written here is the letterbox bookkeeping that v2 has no
transform for. Pixels stay uint8 through geometry (cheaper, and photometric ops expect it) and are
converted to normalized float32 as the very last step.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import ConfigError
from .normalize import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255  # semantic-mask value the segmentation loss ignores (docs/architecture.md §1)

DEFAULT_AUG: dict[str, Any] = {
    "hflip": 0.5,  # probability
    "photometric": 0.5,  # probability of each photometric sub-step
    "zoom_out": 0.5,  # probability
    "max_zoom": 2.0,  # zoom-out canvas is up to this many times the image side
    "iou_crop": 0.5,  # probability
    "scale_jitter": [0.75, 1.25],  # multiplies the letterbox scale; None or [1, 1] disables
    "rotate": 0,  # max degrees; 0 = off
    "min_box_size": 2,  # boxes narrower/shorter than this (final pixels) are dropped; floor 1
    "mosaic": 0.0,  # probability of a 2x2 mosaic (the detection dataset builds it: data/mosaic.py)
    "close_mosaic": 0,  # the last this many epochs without mosaics (engine/callbacks.py)
}
_PROBABILITY_KEYS = ("hflip", "photometric", "zoom_out", "iou_crop", "mosaic")


class SemanticMask(tv_tensors.Mask):
    """A (H, W) class-index mask.

    Its own type because v2 picks padding fills by type: a semantic mask must be padded with the
    ignore index (padding is not background), while instance masks are padded with 0. It also
    keeps ``SanitizeBoundingBoxes`` from indexing its rows as if they were per-box masks.
    """


def _fill(image_fill: int) -> dict[type, int]:
    return {tv_tensors.Image: image_fill, SemanticMask: IGNORE_INDEX, tv_tensors.Mask: 0}


def resized_hw(height: int, width: int, scale: float) -> tuple[int, int]:
    # Shared by Letterbox and unletterbox_boxes so the inverse uses the exact per-axis scale that
    # integer rounding of the resized size produced, not the nominal one.
    return max(1, round(height * scale)), max(1, round(width * scale))


class Letterbox(v2.Transform):
    """Aspect-preserving resize that fits the image into ``size`` = (height, width), then padding
    with ``fill`` to exactly that size. The resized image is centred (as in YOLO letterboxing), so
    the padding is split evenly, with the odd pixel on the right/bottom.

    Records ``sample["letterbox"] = (scale, pad_x, pad_y)`` when called on a dict:
    ``canvas_xy = image_xy * scale + pad``; :func:`unletterbox_boxes` inverts it.

    ``scale_range=(lo, hi)`` (training) multiplies the fitting scale by a random factor and places
    the resized image at a random offset: smaller than the canvas, it is padded; larger, it is
    cropped (``pad_x``/``pad_y`` are then negative) and boxes are clipped by the crop.
    """

    def __init__(
        self,
        size: tuple[int, int],
        fill: int = 114,
        scale_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.size = _parse_size(size)
        self.fill = fill
        if scale_range is not None:
            lo, hi = scale_range
            if not 0 < lo <= hi:
                raise ValueError(
                    f"Letterbox scale_range must satisfy 0 < lo <= hi, got {scale_range}"
                )
            scale_range = (float(lo), float(hi))
        self.scale_range = scale_range
        self._fills = _fill(fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        out_h, out_w = self.size
        scale = min(out_h / height, out_w / width)
        if self.scale_range is not None:
            lo, hi = self.scale_range
            scale *= lo + (hi - lo) * float(torch.rand(()))
        new_h, new_w = resized_hw(height, width, scale)
        if self.scale_range is None:
            pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
        else:
            pad_x = _random_offset(out_w - new_w)
            pad_y = _random_offset(out_h - new_h)
        return {"scale": scale, "new_size": [new_h, new_w], "pad_x": pad_x, "pad_y": pad_y}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out_h, out_w = self.size
        new_h, new_w = params["new_size"]
        pad_x, pad_y = params["pad_x"], params["pad_y"]
        out = self._call_kernel(F.resize, inpt, params["new_size"], antialias=True)
        # A negative offset means the resized image overflows the canvas on that side: pad only
        # the sides with room, then crop the canvas window out of the (possibly larger) result.
        padding = [
            max(pad_x, 0),
            max(pad_y, 0),
            max(out_w - new_w - pad_x, 0),
            max(out_h - new_h - pad_y, 0),
        ]
        if any(padding):
            fill = self._fills.get(type(inpt), 0)
            out = self._call_kernel(F.pad, out, padding=padding, fill=fill)
        if pad_x < 0 or pad_y < 0 or new_w + pad_x > out_w or new_h + pad_y > out_h:
            out = self._call_kernel(
                F.crop, out, top=max(-pad_y, 0), left=max(-pad_x, 0), height=out_h, width=out_w
            )
        return out

    def forward(self, *inputs: Any) -> Any:
        # The base forward discards the params; this one keeps them to record the letterbox
        # geometry in the sample (needed to map predictions back to the original image).
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat, spec = tree_flatten(sample)
        self.check_inputs(flat)
        needs = self._needs_transform_list(flat)
        params = self.make_params([x for x, n in zip(flat, needs) if n])
        out = tree_unflatten(
            [self.transform(x, params) if n else x for x, n in zip(flat, needs)], spec
        )
        if isinstance(out, dict):
            out["letterbox"] = (params["scale"], params["pad_x"], params["pad_y"])
        return out


def _random_offset(room: int) -> int:
    """Uniform offset in [min(0, room), max(0, room)]: random placement or random crop."""
    lo, hi = min(0, room), max(0, room)
    return lo + int(torch.randint(hi - lo + 1, ()))


def unletterbox_boxes(
    boxes: torch.Tensor, scale: float, pad_x: float, pad_y: float, orig_size: tuple[int, int]
) -> torch.Tensor:
    """Map XYXY boxes from letterboxed-canvas pixels back to original-image pixels, clipped.

    ``orig_size`` is the (height, width) of the image before :class:`Letterbox`.
    """
    height, width = orig_size
    new_h, new_w = resized_hw(height, width, scale)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    shift = boxes.new_tensor([pad_x, pad_y, pad_x, pad_y])
    per_axis = boxes.new_tensor([new_w / width, new_h / height] * 2)
    out = (boxes - shift) / per_axis
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


class SanitizeBoxes(nn.Module):
    """Clip boxes to the image and drop degenerate ones (with their labels and instance masks).

    Wraps v2's ClampBoundingBoxes + SanitizeBoundingBoxes. With instance masks present, each box
    is first shrunk to its mask's extent (``tighten_to_masks``): a crop or rotation only clips or
    inflates the box, while the mask still knows where the visible object is. A semantic mask is
    set aside while sanitizing: it is not per-box and would otherwise be row-indexed.
    """

    def __init__(self, min_size: float = 1.0, tighten_to_masks: bool = True) -> None:
        super().__init__()
        self.tighten_to_masks = tighten_to_masks
        self.clamp = v2.ClampBoundingBoxes(clamping_mode="hard")  # whatever the boxes carry
        # The default labels getter finds sample["labels"] and keeps masks as tv_tensors.Mask.
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=max(float(min_size), 1.0))

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in sample.items() if k != "semantic"}
        if self.tighten_to_masks and "masks" in rest and len(rest["boxes"]):
            rest["boxes"] = _tighten(rest["boxes"], rest["masks"])
        out = self.sanitize(self.clamp(rest))
        if "semantic" in sample:
            out["semantic"] = sample["semantic"]
        return out


def _tighten(boxes: tv_tensors.BoundingBoxes, masks: torch.Tensor) -> tv_tensors.BoundingBoxes:
    """Intersect each box with its mask's pixel extent; a box whose mask is empty is unchanged
    (its object may have fallen between pixels of a nearest-neighbour resize)."""
    xyxy = boxes.as_subclass(torch.Tensor).clone()
    present = masks.flatten(1).bool().any(1)
    if present.any():
        extent = masks_to_boxes(masks[present].as_subclass(torch.Tensor))
        extent[:, 2:] += 1  # last pixel index -> exclusive edge
        tight = xyxy[present]
        tight[:, :2] = torch.maximum(tight[:, :2], extent[:, :2].to(tight.dtype))
        tight[:, 2:] = torch.minimum(tight[:, 2:], extent[:, 2:].to(tight.dtype))
        xyxy[present] = tight
    return tv_tensors.wrap(xyxy, like=boxes)


class _TagSemantic(nn.Module):
    """Give sample["semantic"] its own type so padding fills it with the ignore index."""

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        if "semantic" in sample and not isinstance(sample["semantic"], SemanticMask):
            sample = {**sample, "semantic": SemanticMask(sample["semantic"])}
        return sample


class _IoUCrop(v2.RandomIoUCrop):
    """RandomIoUCrop that leaves box-less images alone.

    With no boxes v2's sampler rejects every crop and only exits when it happens to draw its
    'keep as is' option, wasting up to hundreds of trials per background image.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if _num_boxes(flat_inputs) == 0:
            return {}
        return super().make_params(flat_inputs)


def _num_boxes(flat_inputs: list[Any]) -> int:
    return sum(len(x) for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes))


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"img_size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def resolve_aug(aug: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with ``aug``; ConfigError names an unknown key or a bad value."""
    aug = dict(aug or {})
    for key in aug:
        if key not in DEFAULT_AUG:
            close = difflib.get_close_matches(key, DEFAULT_AUG, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown augmentation key {key!r}{hint} (valid: {', '.join(DEFAULT_AUG)})"
            )
    cfg = {**DEFAULT_AUG, **aug}

    def number(key: str, lo: float, hi: float = math.inf) -> float:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ConfigError(
                f"augmentation key {key!r} must be a number in [{lo}, {hi}], got {value!r}"
            )
        return float(value)

    for key in _PROBABILITY_KEYS:
        cfg[key] = number(key, 0.0, 1.0)
    cfg["max_zoom"] = number("max_zoom", 1.0)
    cfg["rotate"] = number("rotate", 0.0, 180.0)
    cfg["min_box_size"] = number("min_box_size", 0.0)
    cfg["close_mosaic"] = int(number("close_mosaic", 0.0))
    jitter = cfg["scale_jitter"]
    if jitter is not None:
        ok = (
            isinstance(jitter, (list, tuple))
            and len(jitter) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in jitter)
            and 0 < jitter[0] <= jitter[1]
        )
        if not ok:
            raise ConfigError(
                f"augmentation key 'scale_jitter' must be [low, high] with 0 < low <= high, "
                f"got {jitter!r}"
            )
        jitter = None if jitter[0] == jitter[1] == 1 else (float(jitter[0]), float(jitter[1]))
    cfg["scale_jitter"] = jitter
    return cfg


def _normalize_steps(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[nn.Module]:
    if (mean is None) != (std is None):
        raise ConfigError("normalization needs both mean and std, or neither")
    steps: list[nn.Module] = [
        v2.ToDtype(torch.float32, scale=True)
    ]  # images only; masks keep dtype
    if mean is not None:
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"mean/std must be 3 values each, std > 0; got {mean!r}, {std!r}")
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def build_detection_transforms(
    img_size: int | tuple[int, int],
    train: bool,
    aug: Mapping[str, Any] | None = None,
    *,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    fill: int = 114,
) -> v2.Compose:
    """The sample-dict pipeline for detection and single-object localisation.

    ``img_size`` is (height, width) (or an int for square). ``mean``/``std`` are on the 0..1
    scale; ``None`` for both only scales pixels to 0..1. Eval is letterbox + normalize.
    """
    size = _parse_size(img_size)
    cfg = resolve_aug(aug)
    fills = _fill(fill)
    steps: list[nn.Module] = [_TagSemantic()]
    if train:
        if cfg["photometric"] > 0:
            steps.append(v2.RandomPhotometricDistort(p=cfg["photometric"]))
        if cfg["zoom_out"] > 0 and cfg["max_zoom"] > 1:
            steps.append(
                v2.RandomZoomOut(fill=fills, side_range=(1.0, cfg["max_zoom"]), p=cfg["zoom_out"])
            )
        if cfg["iou_crop"] > 0:
            steps.append(v2.RandomApply([_IoUCrop()], p=cfg["iou_crop"]))
        if cfg["hflip"] > 0:
            steps.append(v2.RandomHorizontalFlip(p=cfg["hflip"]))
        if cfg["rotate"] > 0:
            # Off by default and kept small: the axis-aligned box of a rotated box encloses the
            # rotated rectangle, not the object, so every rotation inflates the boxes (by up to
            # |cos a| + |sin a|, 41 % at 45 degrees) and teaches the model loose boxes.
            steps.append(v2.RandomRotation(degrees=cfg["rotate"], fill=fills))
        # Scale jitter lives inside the letterbox: a resize before it would simply be undone by
        # the fitting resize, whereas jittering the fitting scale really changes object sizes.
        steps.append(Letterbox(size, fill=fill, scale_range=cfg["scale_jitter"]))
        steps.append(SanitizeBoxes(min_size=cfg["min_box_size"]))
    else:
        steps.append(Letterbox(size, fill=fill))
    steps.extend(_normalize_steps(mean, std))
    return v2.Compose(steps)
