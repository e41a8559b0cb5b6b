"""Lane metrics equal to the official tools: TuSimple's ``lane.py`` and CULane's evaluator.

A lane is an ``(N, 2)`` float array of ``(x, y)`` pixel points. Both metrics are per image and
then accumulated over the split. ``tests/test_lane_metrics_official.py`` compares every figure,
per image and in total, with an independent re-implementation of the two tools on random lanes
near the thresholds.

**TuSimple** (``LaneEval.bench`` of the TuSimple benchmark's ``evaluate/lane.py``): lanes are
x values at the sample rows ``h_samples``; a missing point is -2 (any negative value).

* a frame whose ``run_time`` exceeds 200 ms, or with more than ``G + 2`` predictions for ``G``
  ground-truth lanes, scores (accuracy 0, FP 0, FN 1);
* the threshold of a ground-truth lane is ``20 px / cos(angle)``, where the angle is the arctan
  of the least-squares slope of x on y over the lane's valid points (0 for fewer than two);
* the accuracy of a prediction against that lane is the fraction of *all* sample rows where
  ``|x_pred - x_gt| < threshold``, every missing point set to -100 on both sides (rows where
  both are missing count as hits); every x >= 0 is a point, also beyond the right border;
* each ground-truth lane takes its best prediction (not one-to-one); it is matched when that
  accuracy is ``>= 0.85``, else it is a false negative; ``FP = predictions - matched``;
* with more than four ground-truth lanes the worst lane's accuracy is dropped and one FN
  forgiven; the image accuracy is the sum of the best accuracies over ``max(min(G, 4), 1)``,
  ``FP`` and ``FN`` are rates: ``fp / P`` and ``fn / max(min(G, 4), 1)``;
* split figures are means over images; ``F1`` is UFLD-V2's: ``tp = 1 - FP``,
  ``precision = tp / (tp + FP)``, ``recall = tp / (tp + FN)``.

Polylines meet that rule through :func:`tusimple_from_lanes`: a prediction is sampled at the rows
by linear interpolation inside its vertical extent (what a TuSimple submission writer does, ours
included), a one-point lane only on its own row; a ground-truth lane read from a TuSimple file
(all its points on the rows) is taken as it was written, so a gap inside it stays "no point".

**CULane** (the SCNN/CULane ``evaluate`` tool, as LaneATT's ``culane_metric.py`` ports it, which
CLRNet uses too): lanes with fewer than two points are dropped on both sides; each lane is
interpolated by a cubic parametric spline (``scipy.interpolate.splprep``, ``s = 0``,
``k = min(3, N - 1)``, sampled at ``(N - 1) * 5 + 1`` evenly spaced parameters); the samples are
truncated to integers and drawn with ``cv2.line(..., thickness=30)`` segment by segment (31 px
across a vertical lane at CULane's 1640x590); the IoU of every prediction/ground-truth mask pair
is computed, pairs are matched one-to-one by ``linear_sum_assignment(1 - IoU)``, and a matched
pair is a TP when its IoU is above 0.5 (strictly). Precision, recall and F1 come from the
TP/FP/FN totals over the split.

Where the official tools fail, these functions go on: consecutive duplicate points (the spline
fit raises) are merged first, and a pair of masks that are both empty (a lane wholly outside
the image: 0 / 0) has IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .base import EvalResult, Evaluator, fmt

Lane = np.ndarray  # (N, 2) float (x, y) pixels

TUSIMPLE_PIXEL_THRESH = 20.0
TUSIMPLE_POINT_THRESH = 0.85
TUSIMPLE_MAX_RUN_TIME = 200.0  # ms per frame; lane.py scores slower frames as all wrong
CULANE_WIDTH = 30.0
CULANE_IOU = 0.5
# The image widths those pixel figures were set for (TuSimple 1280x720, CULane 1640x590);
# LaneEvaluator scales them to other image sizes when asked.
TUSIMPLE_REFERENCE_WIDTH = 1280.0
CULANE_REFERENCE_WIDTH = 1640.0


# --------------------------------------------------------------------------- TuSimple
def lane_angle(xs: np.ndarray, y_samples: np.ndarray) -> float:
    """Angle (radians) of a lane from the vertical: arctan of the least-squares dx/dy."""
    xs, ys = np.asarray(xs, float), np.asarray(y_samples, float)
    valid = xs >= 0
    if valid.sum() <= 1:
        return 0.0
    x, y = xs[valid], ys[valid]
    dy = y - y.mean()
    denom = (dy * dy).sum()
    if denom == 0:  # all points on one row: sklearn's LinearRegression gives slope 0 too
        return 0.0
    return float(np.arctan((dy * (x - x.mean())).sum() / denom))


def tusimple_accuracy_matrix(
    pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """(P, G) fraction of sample rows where prediction p is within gt g's threshold."""
    pred = np.where(np.asarray(pred, float) >= 0, pred, -100.0)
    gt = np.where(np.asarray(gt, float) >= 0, gt, -100.0)
    close = np.abs(pred[:, None, :] - gt[None, :, :]) < np.asarray(thresholds)[None, :, None]
    return close.mean(-1) if gt.shape[-1] else np.zeros((len(pred), len(gt)))


def tusimple_image(
    pred: np.ndarray,
    gt: np.ndarray,
    y_samples: np.ndarray,
    pixel_thresh: float = TUSIMPLE_PIXEL_THRESH,
    pt_thresh: float = TUSIMPLE_POINT_THRESH,
    run_time: float | None = None,
) -> tuple[float, float, float]:
    """(accuracy, FP rate, FN rate) of one image; ``pred`` (P, S) and ``gt`` (G, S) x values at
    the ``S`` rows ``y_samples`` (negative = no point); ``run_time``: the frame's ms, if known."""
    y_samples = np.asarray(y_samples, float)
    pred = np.asarray(pred, float).reshape(-1, len(y_samples))
    gt = np.asarray(gt, float).reshape(-1, len(y_samples))
    n_pred, n_gt = len(pred), len(gt)
    too_slow = run_time is not None and run_time > TUSIMPLE_MAX_RUN_TIME
    if too_slow or n_gt + 2 < n_pred:
        return 0.0, 0.0, 1.0
    angles = np.array([lane_angle(g, y_samples) for g in gt])
    thresholds = pixel_thresh / np.cos(angles)
    if n_pred:
        best = tusimple_accuracy_matrix(pred, gt, thresholds).max(0)
    else:
        best = np.zeros(n_gt)
    matched = int((best >= pt_thresh).sum())
    fn = n_gt - matched
    fp = n_pred - matched
    if n_gt > 4 and fn > 0:
        fn -= 1
    # Python's sum, left to right as lane.py adds them, so the float is the same to the bit.
    total = sum(best.tolist())
    if n_gt > 4:
        total -= float(best.min())
    denom = max(min(4.0, n_gt), 1.0)
    return float(total / denom), (fp / n_pred if n_pred else 0.0), float(fn / denom)


def lane_x_at(lane: Lane, ys: np.ndarray) -> np.ndarray:
    """x of ``lane`` at rows ``ys`` by linear interpolation; -2 outside its vertical extent
    (a one-point lane has an x on its own row only)."""
    lane = np.asarray(lane, float).reshape(-1, 2)
    ys = np.asarray(ys, float)
    out = np.full(len(ys), -2.0)
    if not len(lane):
        return out
    order = np.argsort(lane[:, 1], kind="stable")
    x, y = lane[order, 0], lane[order, 1]
    inside = (ys >= y[0]) & (ys <= y[-1])
    out[inside] = np.interp(ys[inside], y, x)
    return out


def lane_x_on_rows(lane: Lane, ys: np.ndarray) -> np.ndarray:
    """x of the point ``lane`` has on each row ``ys``, -2 where it has none: a TuSimple label
    as its file wrote it (rows inside a gap stay empty, as ``lane.py`` sees them)."""
    lane = np.asarray(lane, float).reshape(-1, 2)
    ys = np.asarray(ys, float)
    out = np.full(len(ys), -2.0)
    if not len(lane):  # a label lane without a single point (all -2 in its file)
        return out
    on_row = lane[:, 1][:, None] == ys[None, :]  # (N, S)
    found = on_row.any(0)
    out[found] = lane[on_row.argmax(0)[found], 0]
    return out


def tusimple_from_lanes(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    y_samples: np.ndarray,
    width: int | None = None,
    pixel_thresh: float = TUSIMPLE_PIXEL_THRESH,
    pt_thresh: float = TUSIMPLE_POINT_THRESH,
    gt_on_rows: bool = False,
    run_time: float | None = None,
) -> tuple[float, float, float]:
    """:func:`tusimple_image` for polylines, both sides sampled at ``y_samples`` by
    :func:`lane_x_at`. Every x >= 0 is a point, beyond the right border too (``lane.py`` has no
    border; ``width`` is accepted for older callers and not used). ``gt_on_rows``: a
    ground-truth lane whose points all lie on ``y_samples`` rows (read from a TuSimple file) is
    taken point by point (:func:`lane_x_on_rows`), so a gap inside it is no point."""
    ys = np.asarray(y_samples, float)

    def sample(lanes: Sequence[Lane], exact: bool) -> np.ndarray:
        rows = []
        for lane in lanes:
            lane = np.asarray(lane, float).reshape(-1, 2)
            on_rows = exact and bool(np.isin(lane[:, 1], ys).all())
            rows.append(lane_x_on_rows(lane, ys) if on_rows else lane_x_at(lane, ys))
        xs = np.stack(rows) if rows else np.zeros((0, len(ys)))
        return np.where(xs >= 0, xs, -2.0)  # NaN too: lane.py's "no point"

    return tusimple_image(
        sample(pred, False), sample(gt, gt_on_rows), ys, pixel_thresh, pt_thresh, run_time
    )


def tusimple_f1(fp: float, fn: float) -> float:
    """UFLD-V2's F1 from the mean FP and FN rates."""
    tp = 1.0 - fp
    if tp <= 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- CULane
def culane_lanes(lanes: Sequence[Lane]) -> list[np.ndarray]:
    """The lanes CULane's evaluator reads: those with at least two points (its loader drops
    shorter ones from predictions and annotations alike, so they count neither way)."""
    out = [np.asarray(ln, float).reshape(-1, 2) for ln in lanes]
    return [ln for ln in out if len(ln) >= 2]


def interp_lane(points: Lane, n: int = 5) -> np.ndarray:
    """Cubic parametric spline through ``points`` (fewer points: lower degree), ``n`` samples
    per original interval; consecutive duplicate points are dropped first (the official fit
    raises on them)."""
    from scipy.interpolate import splev, splprep

    pts = np.asarray(points, float).reshape(-1, 2)
    if len(pts) > 1:
        keep = np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]
        pts = pts[keep]
    if len(pts) < 2:
        return pts
    k = min(3, len(pts) - 1)
    tck, u = splprep([pts[:, 0], pts[:, 1]], s=0, k=k)
    u = np.linspace(0.0, 1.0, (len(pts) - 1) * n + 1)
    return np.stack(splev(u, tck), -1)


def _drawn_lane(
    points: Lane, shape: tuple[int, int], width: float
) -> tuple[tuple[int, int], np.ndarray]:
    """The lane drawn as the tool draws it, cut to a box that holds every drawn pixel:
    ``((row, column) of the box's corner, bool crop)``. The canvas is the whole image, so
    clipping at its borders is OpenCV's own; only the crop is converted and counted."""
    h, w = shape
    img = np.zeros((h, w), dtype=np.uint8)
    pts = np.asarray(points, float).reshape(-1, 2)
    if not len(pts):
        return (0, 0), np.zeros((0, 0), bool)
    pts = pts.astype(np.int32)  # truncation toward zero, as the tool's astype(np.int32)
    if len(pts) == 1:
        pts = pts[[0, 0]]
    thickness = max(int(round(width)), 1)
    for (x0, y0), (x1, y1) in zip(pts[:-1].tolist(), pts[1:].tolist()):
        cv2.line(img, (x0, y0), (x1, y1), color=1, thickness=thickness)
    # cv2 paints within thickness / 2 (+1 for rounding) of a segment: a thickness of margin
    # holds every pixel (the official-equality test would see any cut).
    lo, hi = pts.min(0).astype(np.int64) - thickness, pts.max(0).astype(np.int64) + thickness + 1
    x0, y0 = int(np.clip(lo[0], 0, w)), int(np.clip(lo[1], 0, h))
    x1, y1 = int(np.clip(hi[0], x0, w)), int(np.clip(hi[1], y0, h))
    return (y0, x0), img[y0:y1, x0:x1].astype(bool)


def lane_mask(points: Lane, shape: tuple[int, int], width: float) -> np.ndarray:
    """Boolean (H, W) mask of the polyline ``points`` as CULane's evaluator draws it: points
    truncated to integers, ``cv2.line`` per segment, ``width`` rounded to whole pixels (at least
    1; OpenCV takes no fractional thickness). A single point is drawn as a dot."""
    (y0, x0), crop = _drawn_lane(points, shape, width)
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return mask


def culane_ious(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    shape: tuple[int, int],
    width: float = CULANE_WIDTH,
    interpolate: bool = True,
) -> np.ndarray:
    """(P, G) IoU of the drawn lane masks, counted inside the overlap of their boxes."""
    if interpolate:
        pred, gt = [interp_lane(p) for p in pred], [interp_lane(g) for g in gt]
    ious = np.zeros((len(pred), len(gt)))
    if not len(pred) or not len(gt):
        return ious
    a = [_drawn_lane(p, shape, width) for p in pred]
    b = [_drawn_lane(g, shape, width) for g in gt]
    area_a = [int(np.count_nonzero(m)) for _, m in a]
    area_b = [int(np.count_nonzero(m)) for _, m in b]
    for i, ((ya, xa), ma) in enumerate(a):
        for j, ((yb, xb), mb) in enumerate(b):
            top, left = max(ya, yb), max(xa, xb)
            bottom = min(ya + ma.shape[0], yb + mb.shape[0])
            right = min(xa + ma.shape[1], xb + mb.shape[1])
            inter = 0
            if bottom > top and right > left:
                sa = ma[top - ya : bottom - ya, left - xa : right - xa]
                sb = mb[top - yb : bottom - yb, left - xb : right - xb]
                inter = int(np.count_nonzero(sa & sb))
            union = area_a[i] + area_b[j] - inter
            # The same quotient of pixel counts the tool divides; 0 / 0 (both lanes wholly
            # outside the image, where the tool fails) is 0.
            ious[i, j] = inter / union if union else 0.0
    return ious


def match_ious(ious: np.ndarray, iou_thresh: float = CULANE_IOU) -> int:
    """TP count: Hungarian one-to-one matching maximising total IoU, pairs above threshold."""
    from scipy.optimize import linear_sum_assignment

    if ious.size == 0:
        return 0
    # 1 - IoU minimised, as the official port calls it: ties are broken as there.
    rows, cols = linear_sum_assignment(1 - ious)
    return int((ious[rows, cols] > iou_thresh).sum())


def culane_image(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    shape: tuple[int, int],
    width: float = CULANE_WIDTH,
    iou_thresh: float = CULANE_IOU,
) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image of size ``shape`` (H, W)."""
    pred, gt = culane_lanes(pred), culane_lanes(gt)
    if not pred or not gt:
        return 0, len(pred), len(gt)
    tp = match_ious(culane_ious(pred, gt, shape, width), iou_thresh)
    return tp, len(pred) - tp, len(gt) - tp


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# --------------------------------------------------------------------------- evaluator
def default_y_samples(height: int, top: float = 0.0) -> np.ndarray:
    """TuSimple-like sample rows: 72 rows over the image (TuSimple: every 10 px of 720)."""
    step = height / 72.0
    ys = np.arange(step / 2, height, step)
    return ys[ys >= top]


class LaneEvaluator(Evaluator):
    """Both lane metrics over a split.

    ``update(predictions, targets)``: per image, ``predictions[i]["lanes"]`` and
    ``targets[i]["lanes"]`` are lists of (N, 2) point arrays in the same pixel frame, and
    ``targets[i]["size"]`` is (H, W); ``targets[i]["h_samples"]`` (TuSimple rows; its lanes are
    then read point by point) is optional (72 evenly spaced rows otherwise);
    ``predictions[i]["run_time"]`` (ms) is optional. With ``scale_to_image``, the 20-px and
    30-px figures are scaled by the image width over TuSimple's 1280 / CULane's 1640.
    """

    def __init__(
        self,
        prefix: str = "val",
        pixel_thresh: float = TUSIMPLE_PIXEL_THRESH,
        pt_thresh: float = TUSIMPLE_POINT_THRESH,
        width: float = CULANE_WIDTH,
        iou_thresh: float = CULANE_IOU,
        scale_to_image: bool = False,
    ) -> None:
        self.pixel_thresh, self.pt_thresh = pixel_thresh, pt_thresh
        self.width, self.iou_thresh = width, iou_thresh
        self.scale_to_image = scale_to_image
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self.acc = self.fp_rate = self.fn_rate = 0.0
        self.images = 0
        self.tp = self.fp = self.fn = 0

    def update(self, predictions: Sequence[dict], targets: Sequence[dict]) -> None:
        for p, t in zip(predictions, targets):
            h, w = (int(v) for v in t["size"])
            thresh, width = self.pixel_thresh, self.width
            if self.scale_to_image:
                thresh = thresh * w / TUSIMPLE_REFERENCE_WIDTH
                width = width * w / CULANE_REFERENCE_WIDTH
            ys = t.get("h_samples")
            on_rows = ys is not None
            ys = default_y_samples(h) if ys is None else np.asarray(ys, float)
            a, fp, fn = tusimple_from_lanes(
                p["lanes"],
                t["lanes"],
                ys,
                pixel_thresh=thresh,
                pt_thresh=self.pt_thresh,
                gt_on_rows=on_rows,
                run_time=p.get("run_time"),
            )
            self.acc += a
            self.fp_rate += fp
            self.fn_rate += fn
            self.images += 1
            tp, fp_n, fn_n = culane_image(p["lanes"], t["lanes"], (h, w), width, self.iou_thresh)
            self.tp += tp
            self.fp += fp_n
            self.fn += fn_n

    def compute(self) -> EvalResult:
        n = max(self.images, 1)
        acc, fp, fn = self.acc / n, self.fp_rate / n, self.fn_rate / n
        precision, recall, f1 = prf(self.tp, self.fp, self.fn)
        metrics = {
            "tusimple_acc": acc,
            "tusimple_fp": fp,
            "tusimple_fn": fn,
            "tusimple_f1": tusimple_f1(fp, fn),
            "culane_precision": precision,
            "culane_recall": recall,
            "culane_f1": f1,
        }
        out = {self.key(k): v for k, v in metrics.items()}
        out.update(self.loss_metrics())
        table = "\n".join(
            [
                f"TuSimple ({self.images} images)   accuracy   FP       FN       F1",
                f"                              {fmt(acc)}     {fmt(fp)}   {fmt(fn)}   "
                f"{fmt(metrics['tusimple_f1'])}",
                f"CULane (IoU > {self.iou_thresh})   TP {self.tp}  FP {self.fp}  FN {self.fn}   "
                f"precision {fmt(precision)}  recall {fmt(recall)}  F1 {fmt(f1)}",
            ]
        )
        details = {"tp": self.tp, "fp": self.fp, "fn": self.fn, "images": self.images}
        return EvalResult(out, table, details)


__all__ = [
    "LaneEvaluator",
    "culane_image",
    "culane_lanes",
    "culane_ious",
    "interp_lane",
    "lane_angle",
    "lane_mask",
    "lane_x_at",
    "lane_x_on_rows",
    "match_ious",
    "tusimple_f1",
    "tusimple_from_lanes",
    "tusimple_image",
]
