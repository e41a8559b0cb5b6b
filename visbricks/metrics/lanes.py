"""Lane metrics with the two official definitions: TuSimple accuracy/FP/FN and CULane F1.

A lane is an ``(N, 2)`` float array of ``(x, y)`` pixel points. Both metrics are per image and
then accumulated over the split.

**TuSimple** (``lane.py`` of the TuSimple benchmark, reproduced here line for line in numpy):
lanes are compared at the sample rows ``h_samples``; a missing point is -2 (any negative value).

* the threshold of a ground-truth lane is ``20 px / cos(angle)``, where the angle comes from the
  least-squares slope of x on y over the lane's valid points (0 for fewer than two points);
* the accuracy of a prediction against that lane is the fraction of *all* sample rows where
  ``|x_pred - x_gt| < threshold``, with every missing point set to -100 on both sides (so rows
  where both are missing count as hits, as in the official script);
* each ground-truth lane takes its best prediction (not one-to-one); it is matched when that
  accuracy is ``>= 0.85``, else it is a false negative; ``FP = predictions - matched``;
* the image accuracy is the mean best accuracy over the ground-truth lanes (with more than four
  lanes the worst one is dropped, and one FN forgiven), divided by ``max(min(4, G), 1)``;
  ``FP`` and ``FN`` are rates: ``fp / P`` and ``fn / max(min(G, 4), 1)``; with more than
  ``G + 2`` predictions the image scores (0, 0, 1);
* split figures are means over images; ``F1`` is UFLD-V2's: ``tp = 1 - FP``,
  ``precision = tp / (tp + FP)``, ``recall = tp / (tp + FN)``.

**CULane** (the ``evaluate`` tool of SCNN/CULane, as its Python ports compute it): each lane's
points are interpolated by a cubic parametric spline (``scipy.interpolate.splprep``, ``s = 0``,
``k = min(3, N - 1)``, 5 samples per original interval), drawn as a ``width``-px-wide polyline
(30 px at CULane's 1640x590), and the IoU of every prediction/ground-truth mask pair computed;
predictions and lanes are matched one-to-one maximising the total IoU (Hungarian,
``scipy.optimize.linear_sum_assignment``); a matched pair is a TP when its IoU is above the
threshold (0.5; strictly above, as the official tool compares). Precision, recall and F1 come
from the TP/FP/FN totals over the split.

Drawing convention: pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``; it belongs to a
lane when its centre ``(j + 0.5, i + 0.5)`` is within ``width / 2`` of the polyline, so a
vertical lane is exactly ``width`` pixels wide (cv2's thick lines are one pixel wider).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import EvalResult, Evaluator, fmt

Lane = np.ndarray  # (N, 2) float (x, y) pixels

TUSIMPLE_PIXEL_THRESH = 20.0
TUSIMPLE_POINT_THRESH = 0.85
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
) -> tuple[float, float, float]:
    """(accuracy, FP rate, FN rate) of one image; ``pred`` (P, S) and ``gt`` (G, S) x values at
    the ``S`` rows ``y_samples`` (negative = no point)."""
    y_samples = np.asarray(y_samples, float)
    pred = np.asarray(pred, float).reshape(-1, len(y_samples))
    gt = np.asarray(gt, float).reshape(-1, len(y_samples))
    n_pred, n_gt = len(pred), len(gt)
    if n_gt + 2 < n_pred:
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
    total = best.sum()
    if n_gt > 4:
        total -= best.min()
    denom = max(min(4.0, n_gt), 1.0)
    return float(total / denom), (fp / n_pred if n_pred else 0.0), float(fn / denom)


def lane_x_at(lane: Lane, ys: np.ndarray) -> np.ndarray:
    """x of ``lane`` at rows ``ys`` by linear interpolation; -2 outside its vertical extent."""
    lane = np.asarray(lane, float).reshape(-1, 2)
    ys = np.asarray(ys, float)
    out = np.full(len(ys), -2.0)
    if len(lane) < 2:
        return out
    order = np.argsort(lane[:, 1], kind="stable")
    x, y = lane[order, 0], lane[order, 1]
    inside = (ys >= y[0]) & (ys <= y[-1])
    out[inside] = np.interp(ys[inside], y, x)
    return out


def tusimple_from_lanes(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    y_samples: np.ndarray,
    width: int,
    pixel_thresh: float = TUSIMPLE_PIXEL_THRESH,
    pt_thresh: float = TUSIMPLE_POINT_THRESH,
) -> tuple[float, float, float]:
    """:func:`tusimple_image` for polylines: both sides sampled at ``y_samples`` (points that
    fall outside ``[0, width)`` are missing, as in TuSimple's own files)."""

    def sample(lanes):
        xs = np.stack([lane_x_at(ln, y_samples) for ln in lanes]) if len(lanes) else None
        if xs is None:
            return np.zeros((0, len(y_samples)))
        return np.where((xs >= 0) & (xs < width), xs, -2.0)

    return tusimple_image(sample(pred), sample(gt), y_samples, pixel_thresh, pt_thresh)


def tusimple_f1(fp: float, fn: float) -> float:
    """UFLD-V2's F1 from the mean FP and FN rates."""
    tp = 1.0 - fp
    if tp <= 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- CULane
def interp_lane(points: Lane, n: int = 5) -> np.ndarray:
    """Cubic parametric spline through ``points`` (fewer points: lower degree), ``n`` samples
    per original interval; consecutive duplicate points are dropped first."""
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


def lane_mask(points: Lane, shape: tuple[int, int], width: float) -> np.ndarray:
    """Boolean (H, W) mask of the polyline ``points`` drawn ``width`` px wide (round ends)."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    pts = np.asarray(points, float).reshape(-1, 2)
    if len(pts) == 0:
        return mask
    r = width / 2.0
    segs = np.stack([pts[:-1], pts[1:]], 1) if len(pts) > 1 else pts[None, [0, 0]]
    for (x0, y0), (x1, y1) in segs:
        # Pixels whose centre can be within r of the segment: its bounding box grown by r.
        j0 = max(int(np.floor(min(x0, x1) - r - 0.5)), 0)
        j1 = min(int(np.ceil(max(x0, x1) + r + 0.5)), w)
        i0 = max(int(np.floor(min(y0, y1) - r - 0.5)), 0)
        i1 = min(int(np.ceil(max(y0, y1) + r + 0.5)), h)
        if j0 >= j1 or i0 >= i1:
            continue
        cx = np.arange(j0, j1) + 0.5
        cy = (np.arange(i0, i1) + 0.5)[:, None]
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else np.clip(((cx - x0) * dx + (cy - y0) * dy) / length2, 0, 1)
        dist2 = (cx - x0 - t * dx) ** 2 + (cy - y0 - t * dy) ** 2
        mask[i0:i1, j0:j1] |= dist2 <= r * r
    return mask


def culane_ious(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    shape: tuple[int, int],
    width: float = CULANE_WIDTH,
    interpolate: bool = True,
) -> np.ndarray:
    """(P, G) IoU of the drawn lane masks (one matrix product for all pairs)."""
    if interpolate:
        pred, gt = [interp_lane(p) for p in pred], [interp_lane(g) for g in gt]
    if not len(pred) or not len(gt):
        return np.zeros((len(pred), len(gt)))
    a = np.stack([lane_mask(p, shape, width).ravel() for p in pred]).astype(np.float32)
    b = np.stack([lane_mask(g, shape, width).ravel() for g in gt]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def match_ious(ious: np.ndarray, iou_thresh: float = CULANE_IOU) -> int:
    """TP count: Hungarian one-to-one matching maximising total IoU, pairs above threshold."""
    from scipy.optimize import linear_sum_assignment

    if ious.size == 0:
        return 0
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return int((ious[rows, cols] > iou_thresh).sum())


def culane_image(
    pred: Sequence[Lane],
    gt: Sequence[Lane],
    shape: tuple[int, int],
    width: float = CULANE_WIDTH,
    iou_thresh: float = CULANE_IOU,
) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image of size ``shape`` (H, W)."""
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
    ``targets[i]["size"]`` is (H, W); ``targets[i]["h_samples"]`` (TuSimple rows) is optional
    (72 evenly spaced rows otherwise). With ``scale_to_image``, the 20-px and 30-px figures are
    scaled by the image width over TuSimple's 1280 / CULane's 1640.
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
            ys = default_y_samples(h) if ys is None else np.asarray(ys, float)
            a, fp, fn = tusimple_from_lanes(p["lanes"], t["lanes"], ys, w, thresh, self.pt_thresh)
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
    "culane_ious",
    "interp_lane",
    "lane_angle",
    "lane_mask",
    "lane_x_at",
    "match_ious",
    "tusimple_f1",
    "tusimple_from_lanes",
    "tusimple_image",
]
