"""Mosaic: four training images in one (YOLOv4; Ultralytics' default for small data sets).

Each of the four is resized to fit the output window (its long side the window's), placed in one
quadrant of a canvas twice the window's size around a random junction point, and the window is
cut from the canvas centre: the junction always lies inside it, so parts of all four images are
seen, each at its own scale, with four times the objects and backgrounds of one image per step.
Boxes (and instance masks) move with their pixels; a box cut to less than ``min_area_ratio`` of
its area by the window is dropped, as Ultralytics' ``box_candidates`` does (area_thr 0.1), rather
than teaching a sliver as the whole object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

Sample = dict[str, Any]


def _quadrant(
    k: int, xc: int, yc: int, w: int, h: int
) -> tuple[int, int, int, int]:
    """Canvas rectangle (x1, y1, x2, y2) of image ``k`` of size (h, w): 0 above-left of the
    junction (xc, yc), 1 above-right, 2 below-left, 3 below-right."""
    x1 = xc - w if k in (0, 2) else xc
    y1 = yc - h if k in (0, 1) else yc
    return x1, y1, x1 + w, y1 + h


def mosaic4(
    samples: Sequence[Sample],
    size: tuple[int, int],
    fill: int = 114,
    min_area_ratio: float = 0.1,
    generator: torch.Generator | None = None,
    junction: tuple[int, int] | None = None,
) -> Sample:
    """One sample of ``size`` = (height, width) from four sample dicts (``image`` uint8 CHW
    tv_tensors.Image, ``boxes`` XYXY BoundingBoxes, ``labels``, optional ``masks`` (N, H, W));
    ``image_id`` and ``orig_size`` are the first sample's. ``junction`` (y, x) on the canvas
    (twice ``size``) is drawn from its middle half when None."""
    if len(samples) != 4:
        raise ValueError(f"a mosaic takes 4 samples, got {len(samples)}")
    out_h, out_w = size
    channels = samples[0]["image"].shape[0]
    if junction is None:  # anywhere in the middle half of the canvas: inside the centre window
        yc = int(torch.randint(out_h // 2, out_h + out_h // 2 + 1, (), generator=generator))
        xc = int(torch.randint(out_w // 2, out_w + out_w // 2 + 1, (), generator=generator))
    else:
        yc, xc = junction
    canvas = torch.full((channels, 2 * out_h, 2 * out_w), fill, dtype=samples[0]["image"].dtype)
    with_masks = all("masks" in s for s in samples)
    boxes, labels, masks = [], [], []
    for k, sample in enumerate(samples):
        image = sample["image"]
        ih, iw = image.shape[-2:]
        r = min(out_h / ih, out_w / iw)
        nh, nw = max(1, round(ih * r)), max(1, round(iw * r))
        image = F.resize(image.as_subclass(torch.Tensor), [nh, nw], antialias=True)
        x1, y1, x2, y2 = _quadrant(k, xc, yc, nw, nh)
        # The part of the placed image that lies on the canvas.
        cx1, cy1 = max(x1, 0), max(y1, 0)
        cx2, cy2 = min(x2, 2 * out_w), min(y2, 2 * out_h)
        sx1, sy1 = cx1 - x1, cy1 - y1
        canvas[:, cy1:cy2, cx1:cx2] = image[:, sy1 : sy1 + cy2 - cy1, sx1 : sx1 + cx2 - cx1]
        scale = torch.tensor([nw / iw, nh / ih, nw / iw, nh / ih])
        shift = torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
        boxes.append(sample["boxes"].as_subclass(torch.Tensor).float() * scale + shift)
        labels.append(sample["labels"])
        if with_masks:
            m = sample["masks"].as_subclass(torch.Tensor)
            resized = F.resize(m, [nh, nw], interpolation=F.InterpolationMode.NEAREST)
            placed = torch.zeros((m.shape[0], 2 * out_h, 2 * out_w), dtype=m.dtype)
            placed[:, cy1:cy2, cx1:cx2] = resized[:, sy1 : sy1 + cy2 - cy1, sx1 : sx1 + cx2 - cx1]
            masks.append(placed)
    # The window: the canvas centre, out_h x out_w.
    wx, wy = out_w // 2, out_h // 2
    image = canvas[:, wy : wy + out_h, wx : wx + out_w]
    all_boxes = torch.cat(boxes) - torch.tensor([wx, wy, wx, wy], dtype=torch.float32)
    area = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
    clipped = all_boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, out_w)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, out_h)
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept_area > min_area_ratio * area.clamp(min=1e-6)) & (kept_area > 0)
    out: Sample = {
        "image": tv_tensors.Image(image.contiguous()),
        "boxes": tv_tensors.BoundingBoxes(
            clipped[keep], format="XYXY", canvas_size=(out_h, out_w)
        ),
        "labels": torch.cat(labels)[keep],
        "image_id": samples[0]["image_id"],
        "orig_size": samples[0]["orig_size"],
    }
    if with_masks:
        window = torch.cat(masks)[:, wy : wy + out_h, wx : wx + out_w]
        out["masks"] = tv_tensors.Mask(window[keep].contiguous())
    return out
