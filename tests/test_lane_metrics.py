"""Lane metrics: hand-built cases worked out here, and random cases against plain loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from visbricks.metrics.lanes import (
    LaneEvaluator,
    culane_image,
    culane_ious,
    lane_mask,
    match_ious,
    tusimple_f1,
    tusimple_image,
)

# --------------------------------------------------------------------------- TuSimple by hand
YS = np.arange(0, 720, 10, dtype=float)  # TuSimple's 72 sample rows


def test_tusimple_19_vs_21_px_vertical():
    gt = np.full((1, len(YS)), 300.0)  # vertical lane: angle 0, threshold 20 px
    assert tusimple_image(gt + 19, gt, YS) == (1.0, 0.0, 0.0)
    # 21 px away: no row within 20 px → accuracy 0, the prediction is a FP, the lane a FN.
    assert tusimple_image(gt + 21, gt, YS) == (0.0, 1.0, 1.0)


def test_tusimple_19_vs_21_px_at_45_degrees():
    ys = np.arange(0, 300, 10, dtype=float)
    gt = (100.0 + ys)[None]  # dx/dy = 1: 45°, threshold 20 / cos 45° = 28.28 px horizontally
    # A lane moved 19 px perpendicular to itself is 19·√2 = 26.87 px off along each row: hit.
    assert tusimple_image(gt + 19 * math.sqrt(2), gt, ys) == (1.0, 0.0, 0.0)
    # 21 px perpendicular is 29.70 px along the row: beyond 28.28, although 21 ≈ 20 / cos 0.
    assert tusimple_image(gt + 21 * math.sqrt(2), gt, ys) == (0.0, 1.0, 1.0)


def test_tusimple_84_vs_86_percent_of_points():
    ys = np.arange(50, dtype=float) * 10
    gt = np.full((1, 50), 200.0)
    pred = np.full((1, 50), 250.0)  # 50 px off: a miss on every row ...
    pred[0, :42] = 200.0  # ... except 42 of 50 rows = 84 %: below 85 %, not matched
    acc, fp, fn = tusimple_image(pred, gt, ys)
    assert acc == pytest.approx(0.84) and fp == 1.0 and fn == 1.0
    pred[0, 42] = 200.0  # 43 of 50 = 86 %: matched
    acc, fp, fn = tusimple_image(pred, gt, ys)
    assert acc == pytest.approx(0.86) and fp == 0.0 and fn == 0.0


def test_tusimple_missing_points_count_as_agreement_and_rates():
    ys = np.arange(10, dtype=float) * 10
    gt = np.array([[-2] * 5 + [100.0] * 5, [300.0] * 10])
    pred = np.array([[-2] * 5 + [105.0] * 5])  # rows where both are missing agree (-100 = -100)
    acc, fp, fn = tusimple_image(pred, gt, ys)
    # lane 1: 10/10 rows agree; lane 2: 0/10 → accuracy (1 + 0) / 2, one FN of two lanes
    assert (acc, fp, fn) == (0.5, 0.0, 0.5)
    # more than G + 2 predictions: the official script scores the image (0, 0, 1)
    assert tusimple_image(np.repeat(pred, 5, 0), gt, ys) == (0.0, 0.0, 1.0)
    assert tusimple_f1(0.0, 0.0) == 1.0
    assert tusimple_f1(0.2, 0.1) == pytest.approx(2 * 0.8 * (0.8 / 0.9) / (0.8 + 0.8 / 0.9))


def _tusimple_loop(pred, gt, ys, pixel_thresh=20.0, pt_thresh=0.85):
    """The TuSimple benchmark's lane.py, written with plain Python loops."""
    if len(gt) + 2 < len(pred):
        return 0.0, 0.0, 1.0
    threshs = []
    for xs in gt:
        pts = [(x, y) for x, y in zip(xs, ys) if x >= 0]
        theta = 0.0
        if len(pts) > 1:
            my = sum(y for _, y in pts) / len(pts)
            mx = sum(x for x, _ in pts) / len(pts)
            sxy = sum((y - my) * (x - mx) for x, y in pts)
            syy = sum((y - my) ** 2 for _, y in pts)
            theta = math.atan(sxy / syy) if syy else 0.0
        threshs.append(pixel_thresh / math.cos(theta))
    line_accs, matched = [], 0
    for xs, th in zip(gt, threshs):
        accs = []
        for p in pred:
            hits = 0
            for a, b in zip(p, xs):
                a = a if a >= 0 else -100
                b = b if b >= 0 else -100
                hits += abs(a - b) < th
            accs.append(hits / len(xs))
        best = max(accs) if accs else 0.0
        matched += best >= pt_thresh
        line_accs.append(best)
    fn = len(gt) - matched
    fp = len(pred) - matched
    if len(gt) > 4 and fn > 0:
        fn -= 1
    s = sum(line_accs)
    if len(gt) > 4:
        s -= min(line_accs)
    d = max(min(4.0, len(gt)), 1.0)
    return s / d, (fp / len(pred) if pred else 0.0), fn / d


def test_tusimple_random_against_loop():
    rng = np.random.default_rng(0)
    ys = np.arange(0, 200, 10, dtype=float)
    for _ in range(60):
        g, p = rng.integers(0, 6), rng.integers(0, 6)
        gt = rng.uniform(0, 100, (g, 1)) + rng.uniform(-1, 1, (g, 1)) * ys
        pred = np.concatenate([gt[: min(p, g)], rng.uniform(0, 200, (max(p - g, 0), 1)) + 0 * ys])
        pred = pred + rng.normal(0, 12, pred.shape)
        gt[rng.random(gt.shape) < 0.2] = -2
        pred[rng.random(pred.shape) < 0.2] = -2
        got = tusimple_image(pred, gt, ys)
        want = _tusimple_loop([list(r) for r in pred], [list(r) for r in gt], list(ys))
        assert got == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- CULane by hand
def _vertical(x: float, h: int) -> np.ndarray:
    return np.array([[x, -50.0], [x, h + 50.0]])  # crosses the whole image


def test_lane_drawn_as_cv2_thick_line_through_truncated_points():
    # CULane's evaluator: cv2.line(thickness=30) through int points is 31 px across a vertical
    # lane, columns 85 … 115 around x = 100; x = 100.9 is truncated to the same column.
    for x in (100.0, 100.9):
        mask = lane_mask(_vertical(x, 40), (40, 300), 30)
        assert (mask.sum(1) == 31).all()
        cols = np.flatnonzero(mask[0])
        assert cols[0] == 85 and cols[-1] == 115


def test_culane_offset_by_half_width_is_about_one_third_iou():
    h = 60
    gt = [_vertical(100.0, h)]
    # moved by 15 px (half of 30): 16 shared columns of 46 in the union (31-px lines, cv2's
    # thickness 30) → IoU 0.348, not a TP
    iou = culane_ious([_vertical(115.0, h)], gt, (h, 300), 30)
    assert iou[0, 0] == pytest.approx(16 / 46)
    assert culane_image([_vertical(115.0, h)], gt, (h, 300)) == (0, 1, 1)
    # moved by 5 px: 26 / 36 → TP
    assert culane_ious([_vertical(105.0, h)], gt, (h, 300))[0, 0] == pytest.approx(26 / 36)
    assert culane_image([_vertical(105.0, h)], gt, (h, 300)) == (1, 0, 0)


def _line(x0: float, x1: float, h: float) -> np.ndarray:
    return np.array([[x0, 0.0], [x1, h]])


def test_crossing_lanes_hungarian_beats_greedy():
    h, w = 400, 200
    g1, g2 = _line(90, 110, h), _line(110, 90, h)  # two lanes crossing in an X at y = 200
    a = _line(99, 101, h)  # almost vertical: > 0.5 with both, a little more with g1
    b = _line(98, 118, h)  # g1 moved 8 px right: > 0.5 with g1 only
    ious = culane_ious([a, b], [g1, g2], (h, w), 30)
    assert ious[0, 0] > ious[0, 1] > 0.5 and ious[1, 0] > 0.5 > ious[1, 1]
    assert ious[0, 1] + ious[1, 0] > ious[0, 0] + ious[1, 1]
    # Greedy (best pair first) takes a-g1, leaving b-g2 below 0.5: one TP. The maximum
    # total IoU assignment is a-g2, b-g1: both above 0.5, two TPs.
    i, j = np.unravel_index(np.argmax(ious), ious.shape)
    greedy = int(ious[i, j] > 0.5) + int(ious[1 - i, 1 - j] > 0.5)
    assert greedy == 1
    assert match_ious(ious) == 2
    assert culane_image([a, b], [g1, g2], (h, w)) == (2, 0, 0)


def _spline(points, n=5):
    from scipy.interpolate import splev, splprep

    pts = np.asarray(points, float)
    k = min(3, len(pts) - 1)
    tck, _ = splprep([pts[:, 0], pts[:, 1]], s=0, k=k)
    return np.stack(splev(np.linspace(0, 1, (len(pts) - 1) * n + 1), tck), -1)


def _mask_loop(points, h, w, width):
    """CULane's drawing: cv2.line per segment through the points truncated to integers."""
    import cv2

    out = np.zeros((h, w), np.uint8)
    pts = np.asarray(points).astype(np.int32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        cv2.line(out, (int(x0), int(y0)), (int(x1), int(y1)), 1, thickness=int(width))
    return out > 0


def _culane_loop(pred, gt, h, w, width, thr=0.5):
    pm = [_mask_loop(_spline(p), h, w, width) for p in pred]
    gm = [_mask_loop(_spline(g), h, w, width) for g in gt]
    iou = [[(a & b).sum() / max((a | b).sum(), 1) for b in gm] for a in pm]
    best = 0
    small, large = (pred, gt) if len(pred) <= len(gt) else (gt, pred)
    for perm in itertools.permutations(range(len(large)), len(small)):
        pairs = [(i, k) for i, k in enumerate(perm)]
        if len(pred) > len(gt):
            pairs = [(k, i) for i, k in pairs]
        total = sum(iou[a][b] for a, b in pairs)
        tp = sum(iou[a][b] > thr for a, b in pairs)
        if total > best + 1e-12 or best == 0:
            best, best_tp = total, tp
    tp = best_tp if pred and gt else 0
    return tp, len(pred) - tp, len(gt) - tp


def test_culane_random_against_loop():
    rng = np.random.default_rng(1)
    h, w, width = 24, 32, 6.0
    for _ in range(12):

        def lane():
            n = rng.integers(2, 5)
            ys = np.sort(rng.choice(np.arange(0, 24), n, replace=False)).astype(float)
            x0, slope = rng.uniform(4, 28), rng.uniform(-0.6, 0.6)
            return np.stack([x0 + slope * ys + rng.normal(0, 0.5, n), ys], -1)

        gt = [lane() for _ in range(rng.integers(1, 4))]
        pred = [g + rng.normal(0, 2.5, g.shape) for g in gt[: rng.integers(0, len(gt) + 1)]]
        pred += [lane() for _ in range(rng.integers(0, 2))]
        assert culane_image(pred, gt, (h, w), width) == _culane_loop(pred, gt, h, w, width)


def test_evaluator_perfect_and_empty():
    gt = [np.array([[50.0, 40], [60, 100]]), np.array([[150.0, 40], [140, 100]])]
    ev = LaneEvaluator()
    ev.update([{"lanes": gt}, {"lanes": []}], [{"lanes": gt, "size": (100, 200)}] * 2)
    res = ev.compute()
    assert res.details["tp"] == 2 and res.details["fn"] == 2 and res.details["fp"] == 0
    assert res["val/culane_f1"] == pytest.approx(2 / 3)
    # image 1 perfect (acc 1); image 2 no predictions: acc 0.5 (both lanes miss their rows,
    # the rows where no lane exists still agree) → not simply 0
    assert res["val/tusimple_fn"] == pytest.approx(0.5)
    assert "TuSimple" in res.table and "CULane" in res.table
