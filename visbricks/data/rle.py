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


def usable_segmentation(segmentation: Any, height: int, width: int) -> tuple[Any, str | None]:
    """``(segmentation to keep, reason)`` for one annotation's mask on a ``height`` x ``width``
    image, judged without rasterising: the readers call it once per annotation so a bad mask is
    a counted skip naming its annotation, not a traceback when it is first decoded.

    - None, ``[]`` or ``{}``: ``(None, None)``, no mask and nothing wrong;
    - a polygon list: polygons of fewer than 3 points (pycocotools would read 4 numbers as a
      box), of an odd count or of non-finite numbers are dropped, as mmdetection drops them;
      the rest is kept (``(kept, reason)``), or ``(None, reason)`` when none is left;
    - an RLE dict: its ``size`` must be ``[height, width]`` and uncompressed ``counts`` must
      cover exactly height x width pixels (pycocotools writes past the mask otherwise);
      else ``(None, reason)``.
    """
    if segmentation is None or (isinstance(segmentation, (list, dict)) and not segmentation):
        return None, None
    if isinstance(segmentation, list):
        kept, reasons = [], []
        for k, polygon in enumerate(segmentation):
            why = _polygon_problem(polygon)
            if why is None:
                kept.append(polygon)
            else:
                reasons.append(f"polygon {k} {why}")
        reason = "; ".join(reasons) or None
        return (kept or None), reason
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return None, f"segmentation is a {type(segmentation).__name__}, not a polygon list or RLE"


def _polygon_problem(polygon: Any) -> str | None:
    if not isinstance(polygon, list):
        return f"is a {type(polygon).__name__}, not a list of x, y numbers"
    try:
        values = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        return "holds a value that is not a number"
    if values.ndim != 1:
        return "is nested: expected a flat list x1, y1, x2, y2, ..."
    if len(values) % 2:
        return f"has an odd count of numbers ({len(values)})"
    if len(values) < 6:
        return f"has {len(values) // 2} point(s); a polygon needs at least 3 (x, y) points"
    if not np.isfinite(values).all():
        return "has a non-finite coordinate"
    return None


def _rle_problem(rle: dict[str, Any], height: int, width: int) -> tuple[Any, str | None]:
    try:
        size = [int(s) for s in rle["size"]]
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        return None, "RLE without a [height, width] 'size' and 'counts'"
    if size != [height, width]:
        return None, f"RLE size {size} (height, width) is not the image's {[height, width]}"
    if isinstance(counts, list):
        try:
            runs = np.asarray(counts, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            return None, "RLE counts hold a value that is not an integer"
        if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != height * width:
            return None, f"RLE counts do not cover the {height}x{width} pixels exactly"
    elif not isinstance(counts, (str, bytes)):
        return None, f"RLE counts are a {type(counts).__name__}, not a list or a string"
    return rle, None


def rle_area(segmentation: Any, height: int, width: int) -> float:
    """Pixel area of a segmentation (as pycocotools counts it)."""
    return float(mask_utils.area(to_rle(segmentation, height, width)))


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 0/1 mask of a segmentation."""
    return mask_utils.decode(to_rle(segmentation, height, width))


__all__ = ["decode", "rle_area", "to_rle", "usable_segmentation"]
