"""``bench/depth_errors.py``: the region breakdown against a hand computation.

Frame 0 (30 x 12): ground truth 20 m, except rows 10-19 at 5 m, where the prediction is 10 m
(2x too far) and exact elsewhere. Frame 1: 20 m everywhere, rows 0-4 without ground truth, the
prediction exact up to a factor 3 that median scaling removes. By hand: frame 0's abs_rel is
120 / 360 = 1/3, frame 1's 0, the split's 1/6, and all of it lies in the 5 m band.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bench
from visbricks.metrics.depth import evaluate_depth

de = load_bench("depth_errors")
H, W = 30, 12
BAND = slice(10, 20)


def _scene():
    gt = np.full((2, H, W), 20.0)
    gt[0, BAND] = 5.0
    gt[1, :5] = 0.0  # no ground truth
    pred = gt.copy()
    pred[0, BAND] = 10.0
    pred[1] = 3 * np.where(gt[1] > 0, gt[1], 20.0)
    labels = np.full((2, H, W), 1)  # road
    labels[0, BAND] = 5  # car
    return gt, 1.0 / pred, labels


def _rows(breakdowns):
    return {b.title.split(" (")[0]: {r["region"]: r for r in b.rows} for b in breakdowns}


def test_breakdown_matches_hand_computation():
    gt, disp, labels = _scene()
    preds, valid, ratios = de.scaled_predictions(gt, list(disp), 0.1, 80.0)
    assert ratios == pytest.approx([1.0, 1 / 3])
    breakdowns = de.region_breakdowns(
        gt, valid, 80.0, edge_threshold=0.1, edge_px=1, bins=(10.0, 30.0), labels=labels
    )
    text, order, frames = de.report(
        gt, preds, valid, ratios, [("s", 0), ("s", 1)], breakdowns, None, 10
    )
    assert [f["abs_rel"] for f in frames] == pytest.approx([1 / 3, 0.0])
    assert order == [0, 1]
    official = evaluate_depth(gt, disp, 0.1, 80.0, True, True)["abs_rel"]
    assert official == pytest.approx(1 / 6)
    for b in breakdowns:  # each partition's contributions add up to the metric
        assert sum(r["contribution"] for r in b.rows) == pytest.approx(official)

    rows = _rows(breakdowns)
    # Depth edges: the steps lie between rows 9|10 and 19|20 of frame 0, so with 1 px of margin
    # the band is rows 8-11 and 18-21 (96 px of 360), and rows 10, 11, 18, 19 (48 px) are wrong.
    # Pixel weights: 1 / (360 * 2) in frame 0, 1 / (300 * 2) in frame 1 (no edges there).
    edge = rows["depth edges"]
    assert edge["boundary (≤1 px)"]["px"] == pytest.approx(96 / 720)
    assert edge["boundary (≤1 px)"]["contribution"] == pytest.approx(48 / 720)
    assert edge["boundary (≤1 px)"]["abs_rel"] == pytest.approx(0.5)
    assert edge["boundary (≤1 px)"]["err_share"] == pytest.approx(0.4)
    assert edge["interior"]["abs_rel"] == pytest.approx((72 / 720) / (1 - 96 / 720))
    assert edge["interior"]["err_share"] == pytest.approx(0.6)

    near, mid, far = rows["ground-truth depth"].values()
    assert near["region"].startswith("<10 m") and far["region"].startswith("30-80 m")
    assert near["err_share"] == pytest.approx(1.0) and mid["err_share"] == pytest.approx(0.0)
    assert near["abs_rel"] == pytest.approx(1.0) and near["px"] == pytest.approx(120 / 720)
    assert near["bias"] == pytest.approx(1.0)  # 10 m for 5 m: +100 %, too far
    assert near["too_far"] == pytest.approx(1.0) and near["too_near"] == pytest.approx(0.0)
    assert near["a1"] == pytest.approx(0.0) and mid["a1"] == pytest.approx(1.0)
    assert mid["bias"] == pytest.approx(0.0) and far["px"] == 0

    thirds = rows["image rows"]
    assert thirds["middle third"]["err_share"] == pytest.approx(1.0)
    assert thirds["top third"]["px"] == pytest.approx(120 / 720 + 60 / 600)
    assert rows["surface"]["car"]["err_share"] == pytest.approx(1.0)
    assert rows["surface"]["road"]["abs_rel"] == pytest.approx(0.0)
    assert "car 100%" in text  # the worst frame's error is all on the car


def test_ground_plane_is_not_a_depth_edge():
    """The road's log depth changes fast near the horizon, but its disparity is planar."""
    v = np.arange(52, 96, dtype=float)[:, None] + np.zeros((1, 20))
    road = 184.32 * 1.5 / (v - 48 + 0.5)
    assert np.abs(np.diff(np.log(road), axis=0)).max() > 0.1  # a log-gradient test would fire
    assert not de.depth_edges(road[None], 0.1).any()
    step = road.copy()
    step[:, 10:] *= 1.2  # a 20 % depth step between columns 9 and 10
    edges = de.depth_edges(step[None], 0.1)[0]
    assert edges[:, 9:11].all() and edges.sum() == 2 * len(v)
