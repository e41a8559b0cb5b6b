"""The lane metrics equal the official tools, per frame and in total, on random lanes near their
thresholds.

The references here are written from the official sources and import nothing of ours:
- TuSimple: ``LaneEval.bench`` of the TuSimple benchmark's ``evaluate/lane.py`` (the lane angle
  from sklearn's ``LinearRegression``, as there);
- CULane: the SCNN/CULane ``evaluate`` tool as LaneATT's ``utils/culane_metric.py`` ports it
  (CLRNet uses the same file): loader, spline ``interp``, ``draw_lane``, ``discrete_cross_iou``,
  ``culane_metric``.
The random frames sit where the rules decide: offsets around the TuSimple threshold and 8-12 px
off for CULane's 30-px lanes (IoU near 0.5), shares of good points around 85 %, points beyond
the image border, one-point lanes, gaps inside lanes, more than four lanes, slow frames.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.interpolate import splev, splprep
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LinearRegression

from visbricks.metrics.lanes import LaneEvaluator, tusimple_from_lanes, tusimple_image

# --------------------------------------------------------------------------- TuSimple reference
TU_W, TU_H = 1280, 720
TU_ROWS = list(range(160, 720, 10))  # the benchmark's 56 h_samples


def _lane_py_angle(xs, ys):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    xs, ys = xs[xs >= 0], ys[xs >= 0]
    if len(xs) > 1:
        return np.arctan(LinearRegression().fit(ys[:, None], xs).coef_[0])
    return 0


def _lane_py_bench(pred, gt, y_samples, running_time):
    """lane.py's LaneEval.bench on x lists (negative = no point)."""
    if running_time > 200 or len(gt) + 2 < len(pred):
        return 0.0, 0.0, 1.0
    threshs = [20 / np.cos(_lane_py_angle(xs, y_samples)) for xs in gt]
    line_accs, fn, matched = [], 0.0, 0.0
    for x_gts, thresh in zip(gt, threshs):
        accs = []
        for x_preds in pred:
            p = np.array([v if v >= 0 else -100 for v in x_preds])
            g = np.array([v if v >= 0 else -100 for v in x_gts])
            accs.append(np.sum(np.where(np.abs(p - g) < thresh, 1.0, 0.0)) / len(g))
        max_acc = np.max(accs) if accs else 0.0
        if max_acc < 0.85:
            fn += 1
        else:
            matched += 1
        line_accs.append(max_acc)
    fp = len(pred) - matched
    if len(gt) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    return (
        s / max(min(4.0, len(gt)), 1.0),
        fp / len(pred) if len(pred) > 0 else 0.0,
        fn / max(min(len(gt), 4.0), 1.0),
    )


def _sample(points, rows):
    """A submission's x at each row: linear inside the polyline's extent, -2 elsewhere."""
    out = []
    ys = points[:, 1]
    order = np.argsort(ys)
    for r in rows:
        if len(points) and ys.min() <= r <= ys.max():
            x = float(np.interp(r, ys[order], points[order, 0]))
            out.append(x if x >= 0 else -2)
        else:
            out.append(-2)
    return out


def _has_gap(xs):
    valid = np.flatnonzero(np.asarray(xs) >= 0)
    return len(valid) > 0 and valid[-1] - valid[0] + 1 > len(valid)


def _tusimple_frame(rng):
    """(gt x lists as a label file has them, prediction polylines, run_time ms)."""
    rows = np.array(TU_ROWS, float)
    gt = []
    for _ in range(rng.choice([0, 1, 2, 3, 4, 4, 5, 6])):
        # Straight or curved, steep ones reaching past the left or right border.
        x0, slope, bend = rng.uniform(-100, 1400), rng.uniform(-2.5, 2.5), rng.normal(0, 4e-4)
        xs = x0 + slope * (rows - 710) + bend * (rows - 710) ** 2
        top, bottom = sorted(rng.choice(len(rows) + 1, 2, replace=False))
        keep = np.zeros(len(rows), bool)
        keep[top:bottom] = True
        if rng.random() < 0.15:  # a one-point lane (four of TuSimple's labelled frames)
            keep[:] = False
            keep[rng.integers(len(rows))] = True
        elif rng.random() < 0.3 and bottom - top > 6:  # a gap inside the lane
            g = rng.integers(top + 1, bottom - 3)
            keep[g : g + rng.integers(1, 4)] = False
        xs = np.where(keep & (xs >= 0), np.round(xs), -2)  # integers, like the label files
        gt.append([int(v) for v in xs])
    pred = []
    for xs in gt:
        if rng.random() < 0.15:
            continue  # a missed lane
        valid = [(x, y) for x, y in zip(xs, rows) if x >= 0]
        if not valid:
            continue
        pts = np.array(valid, float)
        # Around the lane's threshold (20 px / cos): a shift of 14-26 px, and a share of rows
        # thrown off so that the good rows sit near 85 %.
        pts[:, 0] += rng.choice([-1, 1]) * rng.uniform(14, 26) + rng.normal(0, 1.5, len(pts))
        bad = rng.random(len(pts)) < rng.uniform(0, 0.3)
        pts[bad, 0] += rng.choice([-1, 1]) * rng.uniform(40, 200)
        if rng.random() < 0.3 and len(pts) > 2:  # resampled between the label rows
            t = np.sort(rng.uniform(pts[0, 1], pts[-1, 1], len(pts)))
            pts = np.stack([np.interp(t, pts[:, 1], pts[:, 0]), t], -1)
        pred.append(pts)
    for _ in range(rng.choice([0, 0, 0, 1, 2, 4])):  # false lanes, some of them one point
        n = 1 if rng.random() < 0.2 else rng.integers(2, 20)
        ys = np.sort(rng.choice(rows, n, replace=False)) + (0 if n == 1 else rng.uniform(-5, 5))
        pred.append(np.stack([rng.uniform(-50, 1350) + rng.uniform(-1, 1) * (ys - 700), ys], -1))
    run_time = float(rng.choice([5.0, 80.0, 200.0, 201.0, 400.0], p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    return gt, pred, run_time


def test_tusimple_equals_lane_py_per_frame_and_in_total():
    rng = np.random.default_rng(25)
    rows = np.array(TU_ROWS, float)
    ev = LaneEvaluator()  # lane.py's 20 px and 85 % on the benchmark's own 1280x720 frames
    totals = np.zeros(3)
    rules = ("matched", "unmatched", "one_point", "gap", "beyond", "gt>4", "pred>gt+2", "slow")
    seen = dict.fromkeys(rules, 0)
    for _ in range(300):
        gt, pred, run_time = _tusimple_frame(rng)
        pred_xs = [_sample(p, rows) for p in pred]
        want = _lane_py_bench(pred_xs, gt, TU_ROWS, run_time)
        # The label file read as our TuSimple reader does: each lane its valid (x, row) points.
        gt_lanes = [np.array([(x, y) for x, y in zip(xs, rows) if x >= 0]) for xs in gt]
        got = tusimple_from_lanes(pred, gt_lanes, rows, gt_on_rows=True, run_time=run_time)
        assert got == want, (gt, pred, run_time)
        assert tusimple_image(pred_xs, gt, rows, run_time=run_time) == want
        ev.update(
            [{"lanes": pred, "run_time": run_time}],
            [{"lanes": gt_lanes, "size": (TU_H, TU_W), "h_samples": TU_ROWS}],
        )
        totals += want
        counts = [sum(x >= 0 for x in xs) for xs in gt]
        seen["matched"] += want[0] > 0 and want[2] < 1
        seen["unmatched"] += 0 < want[2] < 1
        seen["one_point"] += 1 in counts
        seen["gap"] += any(_has_gap(xs) for xs in gt)
        seen["beyond"] += any(x >= TU_W for xs in pred_xs + gt for x in xs)
        seen["gt>4"] += len(gt) > 4
        seen["pred>gt+2"] += len(pred) > len(gt) + 2
        seen["slow"] += run_time > 200
    assert min(seen.values()) >= 5, seen  # every rule was exercised
    res = ev.compute()
    acc, fp, fn = totals / 300
    assert res["val/tusimple_acc"] == pytest.approx(acc, rel=1e-12)
    assert res["val/tusimple_fp"] == pytest.approx(fp, rel=1e-12)
    assert res["val/tusimple_fn"] == pytest.approx(fn, rel=1e-12)


def test_tusimple_x_arrays_with_gaps_on_both_sides():
    # The pure formula on x arrays as files hold them: predictions with gaps and x >= width.
    rng = np.random.default_rng(4)
    rows = np.array(TU_ROWS, float)
    for _ in range(200):
        gt, _, run_time = _tusimple_frame(rng)
        pred = []
        for xs in gt[: rng.integers(0, len(gt) + 3)]:
            p = np.array(xs, float) + rng.choice([-1, 1]) * rng.uniform(15, 25)
            p[rng.random(len(p)) < 0.12] = -2  # holes anywhere, also inside the lane
            p[np.array(xs) < 0] = -2
            pred.append([float(v) for v in p])
        want = _lane_py_bench(pred, gt, TU_ROWS, run_time)
        assert tusimple_image(pred, gt, rows, run_time=run_time) == want


# --------------------------------------------------------------------------- CULane reference
CU_SHAPE = (590, 1640)


def _official_interp(points, n=5):
    x = [p[0] for p in points]
    y = [p[1] for p in points]
    tck, u = splprep([x, y], s=0, t=n, k=min(3, len(points) - 1))  # t is ignored for s=0 fits
    u = np.linspace(0.0, 1.0, num=(len(u) - 1) * n + 1)
    return np.array(splev(u, tck)).T


def _official_draw(lane, width=30):
    # The tool draws white on a 3-channel image: three equal planes, so every pixel count in
    # its IoU is three times the one-plane count and the quotient is the same; one plane here.
    img = np.zeros(CU_SHAPE, dtype=np.uint8)
    lane = lane.astype(np.int32)
    for p1, p2 in zip(lane[:-1], lane[1:]):
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), 255, thickness=width)
    return img > 0


def _official_culane(pred, anno, width=30, iou_threshold=0.5):
    pred = [p for p in pred if len(p) >= 2]  # load_culane_img_data drops shorter lanes
    anno = [a for a in anno if len(a) >= 2]
    if len(pred) == 0:
        return 0, 0, len(anno)
    if len(anno) == 0:
        return 0, len(pred), 0
    pm = [_official_draw(_official_interp(p), width) for p in pred]
    am = [_official_draw(_official_interp(a), width) for a in anno]
    ious = np.zeros((len(pm), len(am)))
    for i, x in enumerate(pm):
        for j, y in enumerate(am):
            ious[i, j] = (x & y).sum() / (x | y).sum()
    rows, cols = linear_sum_assignment(1 - ious)
    tp = int((ious[rows, cols] > iou_threshold).sum())
    return tp, len(pred) - tp, len(anno) - tp


def _culane_frame(rng):
    """(ground truth, predictions): lanes as .lines.txt points, bottom to top."""
    h, w = CU_SHAPE
    gt = []
    for _ in range(rng.choice([0, 1, 2, 3, 4, 4, 5, 6])):
        n = 1 if rng.random() < 0.1 else rng.integers(3, 30)
        bottom = rng.uniform(h - 60, h + 40)  # some start below the image
        ys = bottom - 10 * np.arange(n)
        x0, slope, bend = rng.uniform(150, w - 150), rng.uniform(-3, 3), rng.normal(0, 2e-3)
        xs = x0 + slope * (bottom - ys) + bend * (bottom - ys) ** 2  # may leave the image
        gt.append(np.stack([xs, ys], -1))
    pred = []
    for lane in gt:
        if rng.random() < 0.15:
            continue
        p = lane.copy()
        # 8-12 px sideways: the IoU of two 30-px lanes lands near 0.5.
        p[:, 0] += rng.choice([-1, 1]) * rng.uniform(8, 12) + rng.normal(0, 0.7, len(p))
        if len(p) > 8 and rng.random() < 0.4:  # a gap: points missing inside the lane
            g = rng.integers(2, len(p) - 5)
            p = np.delete(p, np.arange(g, g + rng.integers(1, 4)), 0)
        if rng.random() < 0.2:  # one point only (dropped by the tool on both sides)
            p = p[:1]
        pred.append(p)
    for _ in range(rng.choice([0, 0, 1, 2])):
        n = rng.integers(1, 12)
        ys = h - 5 - 20 * np.arange(n) - rng.uniform(0, 5)
        pred.append(np.stack([rng.uniform(0, w) + rng.uniform(-2, 2) * (h - ys), ys], -1))
    return gt, pred


def test_culane_equals_official_evaluator_per_frame_and_in_total():
    rng = np.random.default_rng(26)
    ev = LaneEvaluator()  # 30 px, IoU > 0.5 at CULane's own 1640x590
    totals = np.zeros(3, int)
    missed = lanes = 0
    for _ in range(120):
        gt, pred = _culane_frame(rng)
        want = _official_culane(pred, gt)
        before = (ev.tp, ev.fp, ev.fn)
        ev.update([{"lanes": pred}], [{"lanes": gt, "size": CU_SHAPE}])
        got = (ev.tp - before[0], ev.fp - before[1], ev.fn - before[2])
        assert got == want, (gt, pred)
        totals += want
        lanes += len(gt) + len(pred)
        missed += min(want[1], want[2])  # a shifted lane below IoU 0.5 is both FP and FN
    assert lanes >= 600 and totals[0] >= 100 and missed >= 30, (lanes, totals, missed)
    res = ev.compute()
    tp, fp, fn = (int(v) for v in totals)
    assert (res.details["tp"], res.details["fp"], res.details["fn"]) == (tp, fp, fn)
    assert res["val/culane_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-12)
