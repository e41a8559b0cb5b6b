"""Row and column anchors for lanes (UFLD-V2): lane polylines ↔ per-anchor cell positions.

UFLD-V2 describes each lane by where it crosses a fixed set of image rows (*row anchors*) and
image columns (*column anchors*). Along each anchor the image is divided into ``cells`` equal
cells; the model classifies which cell the lane crosses (or that it does not cross).

Coordinates: a lane is an ``(N, 2)`` float array of ``(x, y)`` pixels. Cell ``k`` of ``n`` along
a row of width ``W`` covers ``[k W / n, (k + 1) W / n)``; its centre is ``(k + 0.5) W / n``. The
continuous *cell position* of a point ``x`` is ``u = x n / W - 0.5`` (so the cell index is
``round(u)``); decoding inverts this, so encode → decode is exact up to the rounding the cell
classification implies (at most half a cell).

Lane slots: the model has ``num_lanes`` outputs, ordered left to right around the ego vehicle
(CULane's convention: with 4 slots, 0 = left of the ego-left, 1 = ego-left, 2 = ego-right,
3 = right of the ego-right). :func:`assign_slots` puts the lanes of an image into slots by where
they meet the bottom of the image relative to its centre. UFLD-V2 reads the middle lanes from
the row anchors and the side lanes (nearly horizontal in the image) from the column anchors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Lane = np.ndarray


@dataclass(frozen=True)
class LaneAnchors:
    """Anchor layout. Positions are fractions of the input height (rows) and width (columns)."""

    rows: tuple[float, ...]
    cols: tuple[float, ...]
    row_cells: int
    col_cells: int
    num_lanes: int
    col_lanes: tuple[int, ...] = ()  # slots decoded from column anchors (the rest: rows)

    @classmethod
    def make(
        cls,
        num_rows: int,
        num_cols: int,
        row_cells: int,
        col_cells: int,
        num_lanes: int,
        row_range: Sequence[float] = (0.42, 1.0),
        col_range: Sequence[float] = (0.0, 1.0),
        col_lanes: Sequence[int] | None = None,
    ) -> LaneAnchors:
        """Evenly spaced anchors from the first to the last position of each range, both
        included (UFLD-V2: ``linspace(0.42, 1, 72)`` rows on CULane, TuSimple's 56 sample rows
        ``linspace(160, 710, 56) / 720``).
        ``col_lanes`` None → the two outer slots when there are at least 4."""
        if col_lanes is None:
            col_lanes = (0, num_lanes - 1) if num_lanes >= 4 else ()
        rows = np.linspace(row_range[0], row_range[1], num_rows)
        cols = np.linspace(col_range[0], col_range[1], num_cols)
        return cls(
            tuple(float(r) for r in rows),
            tuple(float(c) for c in cols),
            int(row_cells),
            int(col_cells),
            int(num_lanes),
            tuple(int(c) for c in col_lanes),
        )

    @property
    def row_lanes(self) -> tuple[int, ...]:
        return tuple(k for k in range(self.num_lanes) if k not in self.col_lanes)


def labelled_row_range(
    images: Iterable[tuple[Sequence[Lane], float]],
    percentile: float = 2.0,
    to_bottom: bool = True,
) -> tuple[float, float] | None:
    """The band of rows where labelled lanes exist, as fractions of the image height, for
    ``model.row_anchors: auto``. ``images``: each image's lanes and its height.

    From the ``percentile``-th percentile of the lanes' top rows (a few lanes drawn unusually
    high do not pull every anchor up), rounded down to 0.001, to the image bottom (1.0) when
    ``to_bottom`` (training continues lanes there: ``data.extend_lanes``), else to the
    ``100 - percentile``-th percentile of their lowest rows, rounded up. None when no lane has
    two points.
    """
    tops, bottoms = [], []
    for lanes, height in images:
        for lane in lanes:
            pts = np.asarray(lane, float).reshape(-1, 2)
            if len(pts) >= 2 and np.isfinite(pts).all() and height > 0:
                tops.append(pts[:, 1].min() / height)
                bottoms.append(pts[:, 1].max() / height)
    if not tops:
        return None
    lo = np.floor(np.percentile(tops, percentile) * 1000) / 1000
    hi = 1.0 if to_bottom else np.ceil(np.percentile(bottoms, 100 - percentile) * 1000) / 1000
    lo, hi = float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))
    return lo, max(hi, lo)


def anchor_positions(anchors: LaneAnchors, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns of the anchors for an image of ``size`` (H, W): fraction f is
    ``f * H``. Images are resized, not letterboxed, so a fraction names the same place at the
    input size and the original size (TuSimple's row 710 of 720 is 0.98611 at both)."""
    h, w = size
    return np.asarray(anchors.rows, float) * h, np.asarray(anchors.cols, float) * w


# --------------------------------------------------------------------------- geometry
def x_at_rows(lane: Lane, ys: np.ndarray) -> np.ndarray:
    """x of the polyline at each row ``ys`` (linear between points); NaN outside its extent.

    Where a lane crosses a row several times, the crossing of the lowest segment wins.
    """
    return _crossings(np.asarray(lane, float).reshape(-1, 2), np.asarray(ys, float), axis=1)


def y_at_cols(lane: Lane, xs: np.ndarray) -> np.ndarray:
    """y of the polyline at each column ``xs``; NaN where it does not cross. The crossing
    nearest the image bottom (largest y) wins, the part of the lane closest to the camera."""
    return _crossings(np.asarray(lane, float).reshape(-1, 2), np.asarray(xs, float), axis=0)


def _crossings(pts: np.ndarray, values: np.ndarray, axis: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if len(pts) < 2:
        return out
    a, b = pts[:-1], pts[1:]  # segments
    lo, hi = a[:, axis], b[:, axis]
    v = values[:, None]
    span = hi - lo
    inside = ((v >= np.minimum(lo, hi)) & (v <= np.maximum(lo, hi))) & (span != 0)
    t = np.where(span != 0, (v - lo) / np.where(span != 0, span, 1), 0)
    other = 1 - axis
    cross = a[:, other] + t * (b[:, other] - a[:, other])  # (V, S)
    if axis == 1:  # rows: prefer the lowest segment (largest y of its midpoint)
        key = np.where(inside, (a[:, 1] + b[:, 1])[None] / 2, -np.inf)
    else:  # columns: prefer the crossing with the largest y
        key = np.where(inside, cross, -np.inf)
    best = key.argmax(1)
    found = inside.any(1)
    out[found] = cross[np.arange(len(values)), best][found]
    return out


def bottom_x(lane: Lane, height: float) -> float:
    """Where the lane, extended along its lowest segment, meets the image bottom."""
    pts = np.asarray(lane, float).reshape(-1, 2)
    pts = pts[np.argsort(pts[:, 1], kind="stable")]
    if len(pts) == 1 or pts[-1, 1] == pts[-2, 1]:
        return float(pts[-1, 0])
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    return float(x1 + (height - y1) * (x1 - x0) / (y1 - y0))


def assign_slots(lanes: Sequence[Lane], width: float, height: float, num_lanes: int) -> list:
    """Lanes into ``num_lanes`` slots left to right around the image centre (None = empty).

    Lanes meeting the bottom left of the centre fill the slots left of the middle, nearest
    first; right ones the slots from the middle on. Lanes beyond the slots are dropped.
    """
    slots: list = [None] * num_lanes
    usable = [np.asarray(ln, float).reshape(-1, 2) for ln in lanes if len(ln) >= 2]
    xs = [bottom_x(ln, height) for ln in usable]
    left = sorted((x, i) for i, x in enumerate(xs) if x < width / 2)[::-1]
    right = sorted((x, i) for i, x in enumerate(xs) if x >= width / 2)
    mid = num_lanes // 2
    for k, (_, i) in enumerate(left[:mid]):
        slots[mid - 1 - k] = usable[i]
    for k, (_, i) in enumerate(right[: num_lanes - mid]):
        slots[mid + k] = usable[i]
    return slots


# --------------------------------------------------------------------------- encoding
def extend_to_bottom(
    x: np.ndarray, ys: np.ndarray, width: float, min_points: int = 6
) -> np.ndarray:
    """UFLD's rule for training labels: a lane whose points stop above the last row anchor (cut
    by the augmentation's shift or rotation, by an occluder, or by the annotator) continues to
    the image bottom along a straight line fitted to the lower half of its in-image anchor
    crossings, when at least ``min_points`` anchors see it. Without it the lowest anchors are
    labelled "no lane" in a random share of the samples while the painted line plainly goes on,
    and the model learns a low existence there.

    ``x``: the lane's x at each anchor row ``ys`` (increasing), NaN outside its extent. Returns a
    copy with the rows below the extent filled; fitted positions outside ``[0, width)`` stay NaN.
    """
    finite = np.flatnonzero(np.isfinite(x))
    seen = np.flatnonzero(np.isfinite(x) & (x >= 0) & (x < width))
    if len(seen) < min_points or finite[-1] == len(x) - 1:
        return x
    lower = seen[len(seen) // 2 :]
    slope, intercept = np.polyfit(ys[lower], x[lower], 1)
    out = x.copy()
    below = np.arange(finite[-1] + 1, len(x))
    fitted = slope * ys[below] + intercept
    out[below] = np.where((fitted >= 0) & (fitted < width), fitted, np.nan)
    return out


def encode_lanes(
    slots: Sequence[Lane | None],
    size: tuple[int, int],
    anchors: LaneAnchors,
    extend: bool = False,
) -> dict[str, torch.Tensor]:
    """Targets of one image: ``row_pos`` (R, L) and ``col_pos`` (C, L) continuous cell positions,
    -1 where the lane does not cross the anchor inside the image. ``extend``: row-anchor labels
    of lanes that stop short of the bottom are continued there (:func:`extend_to_bottom`)."""
    h, w = size
    ys, xs = anchor_positions(anchors, size)
    row = np.full((len(ys), anchors.num_lanes), -1.0, dtype=np.float32)
    col = np.full((len(xs), anchors.num_lanes), -1.0, dtype=np.float32)
    for k, lane in enumerate(slots):
        if lane is None or len(lane) < 2:
            continue
        x = x_at_rows(lane, ys)
        if extend:
            x = extend_to_bottom(x, ys, w)
        ok = np.isfinite(x) & (x >= 0) & (x < w)
        row[ok, k] = np.clip(x[ok] * anchors.row_cells / w - 0.5, 0, anchors.row_cells - 1)
        y = y_at_cols(lane, xs)
        ok = np.isfinite(y) & (y >= 0) & (y < h)
        col[ok, k] = np.clip(y[ok] * anchors.col_cells / h - 0.5, 0, anchors.col_cells - 1)
    return {"row_pos": torch.from_numpy(row), "col_pos": torch.from_numpy(col)}


def cell_labels(pos: torch.Tensor) -> torch.Tensor:
    """Cell index targets from positions: ``round(pos)``, -1 (ignored) where absent."""
    return torch.where(pos >= 0, pos.round(), torch.full_like(pos, -1)).long()


def lane_mask_target(
    slots: Sequence[Lane | None], size: tuple[int, int], stride: int, radius: float = 1.0
) -> torch.Tensor:
    """(H/stride, W/stride) long map: slot + 1 on the lanes (``radius`` cells thick), 0 else.

    The target of the auxiliary segmentation branch.
    """
    h, w = (int(np.ceil(s / stride)) for s in size)
    out = np.zeros((h, w), dtype=np.int64)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    for k, lane in enumerate(slots):
        if lane is None or len(lane) < 2:
            continue
        pts = np.asarray(lane, float) / stride
        # dense samples along the polyline, then every cell within ``radius`` of one
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        n = max(int(seg.sum() * 2), 2)
        s = np.concatenate([[0], np.cumsum(seg)])
        t = np.linspace(0, s[-1], n)
        dense = np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], -1)
        for x, y in dense:
            near = (jj - x) ** 2 + (ii - y) ** 2 <= radius * radius
            out[near] = k + 1
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- decoding
def local_expectation(logits: torch.Tensor, window: int = 1) -> torch.Tensor:
    """UFLD-V2's local decoding: argmax cell, then the softmax expectation of the cell index
    over the ``±window`` cells around it. ``logits`` (B, cells, ...) → positions (B, ...)."""
    cells = logits.shape[1]
    # A window past the cells only adds clamped copies of the edge cells (eval.window=10^6
    # allocated 2·10^6 + 1 of them per row).
    window = min(window, cells - 1)
    idx = logits.argmax(1, keepdim=True)
    offsets = torch.arange(-window, window + 1, device=logits.device)
    shape = [1, -1] + [1] * (logits.ndim - 2)
    near = (idx + offsets.view(shape)).clamp(0, cells - 1)  # (B, 2w+1, ...)
    weights = logits.gather(1, near).float().softmax(1)
    return (weights * near.float()).sum(1)


def decode_lanes(
    outputs: dict[str, torch.Tensor],
    anchors: LaneAnchors,
    size: tuple[int, int],
    min_rows: float = 0.5,
    min_cols: float = 0.25,
    window: int = 1,
) -> list[list[dict]]:
    """Lanes per image from the head's outputs, in input pixels (``size`` = (H, W)).

    A row-anchor lane is kept when more than ``min_rows`` of the row anchors see it (its
    existence logit wins), a column-anchor lane with ``min_cols`` of the columns (the UFLD-V2
    rule: half of the rows, a quarter of the columns). Each lane: ``{"slot", "points" (N, 2),
    "score"}`` (score: mean existence probability of its points). Points run top to bottom.
    """
    h, w = size
    row_x = (local_expectation(outputs["loc_row"], window) + 0.5) * w / anchors.row_cells
    col_y = (local_expectation(outputs["loc_col"], window) + 0.5) * h / anchors.col_cells
    row_p = outputs["exist_row"].float().softmax(1)[:, 1]  # (B, R, L)
    col_p = outputs["exist_col"].float().softmax(1)[:, 1]  # (B, C, L)
    ys, xs = (torch.tensor(v, device=row_x.device) for v in anchor_positions(anchors, (h, w)))
    result = []
    for b in range(row_x.shape[0]):
        lanes = []
        for k in range(anchors.num_lanes):
            if k in anchors.col_lanes:
                ok = col_p[b, :, k] > 0.5
                if ok.sum() <= min_cols * len(xs) or ok.sum() < 2:
                    continue
                pts = torch.stack([xs[ok], col_y[b, ok, k]], -1)
                score = col_p[b, ok, k].mean()
            else:
                ok = row_p[b, :, k] > 0.5
                if ok.sum() <= min_rows * len(ys) or ok.sum() < 2:
                    continue
                pts = torch.stack([row_x[b, ok, k], ys[ok]], -1)
                score = row_p[b, ok, k].mean()
            pts = pts[pts[:, 1].argsort()].cpu().numpy().astype(np.float64)
            lanes.append({"slot": k, "points": pts, "score": float(score)})
        result.append(lanes)
    return result


def smooth_lane(points: Lane, num: int | None = None, smoothing: float = 1.0) -> np.ndarray:
    """Cubic smoothing spline through a lane's points (``scipy.interpolate.splprep``), resampled
    to ``num`` points (default: as many as given). ``smoothing``: expected pixel error per
    point; 0 interpolates exactly."""
    from scipy.interpolate import splev, splprep

    pts = np.asarray(points, float).reshape(-1, 2)
    if len(pts) > 1:
        pts = pts[np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]]
    if len(pts) < 4:
        return pts
    tck, _ = splprep([pts[:, 0], pts[:, 1]], s=len(pts) * smoothing**2, k=3)
    return np.stack(splev(np.linspace(0, 1, num or len(pts)), tck), -1)


__all__ = [
    "LaneAnchors",
    "anchor_positions",
    "assign_slots",
    "bottom_x",
    "cell_labels",
    "decode_lanes",
    "encode_lanes",
    "extend_to_bottom",
    "lane_mask_target",
    "local_expectation",
    "smooth_lane",
    "x_at_rows",
    "y_at_cols",
]
