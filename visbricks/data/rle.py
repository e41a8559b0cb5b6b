"""COCO segmentations (polygon lists, uncompressed or compressed RLE) → one pycocotools RLE.

The single place a segmentation as annotated becomes a mask: the detection dataset decodes it,
the COCO reader/writer measure it, the COCO evaluator takes its area. Malformed input raises
``ValueError``/``TypeError``; callers turn that into a DataError naming their file and object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of a polygon list (``[[x1, y1, x2, y2, ...], ...]``, merged), an
    uncompressed RLE (``counts`` a list: ``iscrowd`` annotations) or a compressed RLE (``counts``
    bytes or str), for an image of ``height`` x ``width``."""
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in p] for p in segmentation]
        if not polygons or any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError("a polygon needs at least 3 (x, y) points")
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict):
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image size {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
    raise TypeError(f"expected a polygon list or an RLE dict, got {type(segmentation).__name__}")


def rle_area(segmentation: Any, height: int, width: int) -> float:
    """Pixel area of a segmentation (as pycocotools counts it)."""
    return float(mask_utils.area(to_rle(segmentation, height, width)))


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 0/1 mask of a segmentation."""
    return mask_utils.decode(to_rle(segmentation, height, width))


__all__ = ["decode", "rle_area", "to_rle"]
