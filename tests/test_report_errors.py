"""The run report's per-sample error scores (metrics/errors.py) and its bounded gallery heap,
checked against hand-made cases and the split-level metrics they mirror."""

from __future__ import annotations

import numpy as np
import torch

from visbricks.deploy.report_views import Item, Worst
from visbricks.metrics.depth import evaluate_depth
from visbricks.metrics.errors import (
    box_errors,
    confused_pairs,
    depth_frame,
    error_mask,
    image_iou,
    lane_errors,
    multilabel_badness,
    sample_losses,
)
from visbricks.metrics.lanes import culane_image


def test_box_errors_sorts_every_kind():
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]])
    true_labels = np.array([0, 0, 1, 0])
    pred = np.array(
        [
            [0, 0, 10, 10],  # tp on object 0
            [0, 0, 10, 11],  # duplicate of object 0 (same class, matched already)
            [20, 20, 26, 30],  # IoU 0.6 with object 1: tp
            [40, 40, 50, 50],  # class 0 on the class-1 object 2: wrong class
            [62, 62, 78, 78],  # IoU 64/(100+256-64) = 0.219 with object 3: poor
            [90, 90, 99, 99],  # nothing there: fp
        ],
        dtype=np.float32,
    )
    labels = np.array([0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    e = box_errors(pred, labels, scores, truth, true_labels)
    assert e.tp == [(0, 0), (2, 1)]
    assert e.duplicate == [1]
    assert e.wrong_class == [(3, 2)]
    assert [(p, t) for p, t, _ in e.poor] == [(4, 3)]
    assert abs(e.poor[0][2] - 64 / 292) < 1e-6
    assert e.fp == [5]
    assert e.missed == []  # every object was found, if badly
    assert e.errors == 4
    assert e.counts() == {
        "true_positives": 2,
        "false_positives": 3,
        "poor_localisations": 1,
        "missed": 0,
    }
    # Below 0.1 IoU a prediction finds nothing: the object is missed and the box a false positive.
    far = box_errors(np.array([[66, 66, 90, 90]]), [0], [0.5], truth[3:], [0])
    assert far.fp == [0] and far.missed == [0] and far.poor == []
    # The higher score takes the object (VOC's greedy order), whatever the list order.
    e = box_errors(np.array([[0, 0, 10, 9], [0, 0, 10, 10]]), [0, 0], [0.2, 0.9], truth[:1], [0])
    assert e.tp == [(1, 0)] and e.duplicate == [0]
    none = box_errors(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    assert none.errors == 0


def test_classification_scores():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = [-torch.log_softmax(logits[i], 0)[labels[i]].item() for i in range(2)]
    assert np.allclose(sample_losses(logits, labels), expected)
    matrix = np.array([[5, 2, 0], [3, 4, 2], [0, 7, 1]])
    assert confused_pairs(matrix, 2) == [(2, 1, 7), (1, 0, 3)]
    assert len(confused_pairs(np.eye(3, dtype=int), 5)) == 0
    bad = multilabel_badness(np.array([[0.9, 0.2]]), np.array([[0, 1]]))
    assert np.allclose(bad, [[0.9, 0.8]])


def test_image_iou_and_error_mask():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    # class 0: tp 3, union 4; class 1: tp 2, union 2 + 2 + 0 = ... counted by hand:
    # truth 1 at (0,2),(0,3),(1,2); pred 1 at (0,1),(0,2),(0,3) → tp 2, union 4.
    # class 2: predicted at (1,2) only (the ignored (1,3) does not count): tp 0, union 1.
    assert abs(image_iou(pred, truth, 3) - np.mean([3 / 4, 2 / 4, 0.0])) < 1e-9
    wrong = error_mask(pred, truth)
    assert wrong.tolist() == [[False, True, False, False], [False, False, True, False]]
    assert np.isnan(image_iou(pred, np.full_like(truth, 255), 3))


def test_depth_frame_matches_the_split_metric():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2, 40, (12, 16))
    gt[:3] = 0  # no ground truth in the top rows
    disparity = rng.uniform(0.02, 0.5, (6, 8))
    abs_rel, depth, error = depth_frame(gt, disparity, 0.1, 80.0)
    expected = evaluate_depth([gt], [disparity], 0.1, 80.0, True, True)["abs_rel"]
    assert abs(abs_rel - expected) < 1e-9
    assert depth.shape == gt.shape and (error[:3] == 0).all()
    assert np.isnan(depth_frame(np.zeros((4, 4)), np.ones((2, 2)), 0.1, 80.0)[0])


def test_lane_errors_match_culane():
    shape = (60, 80)
    truth = [np.array([[10, 59], [20, 0]]), np.array([[60, 59], [50, 0]])]
    pred = [np.array([[11, 59], [21, 0]]), np.array([[35, 59], [35, 0]])]
    pairs, fp, fn = lane_errors(pred, truth, shape, 8.0)
    assert pairs == [(0, 0)] and fp == [1] and fn == [1]
    tp, n_fp, n_fn = culane_image(pred, truth, shape, 8.0)
    assert (tp, n_fp, n_fn) == (len(pairs), len(fp), len(fn))


def test_worst_keeps_the_k_largest_and_draws_only_those():
    made = []

    def make(i):
        made.append(i)
        return Item(str(i), {}, lambda: np.zeros((1, 1, 3), np.uint8))

    worst = Worst(3)
    for i, badness in enumerate([0.5, 0.1, 0.9, 0.9, 0.3, float("nan"), 0.95, 0.2]):
        worst.offer(badness, lambda i=i: make(i))
    assert [it.title for it in worst.items()] == ["6", "2", "3"]  # ties: first offered first
    assert made == [0, 1, 2, 3, 6]  # a sample that cannot enter is never drawn
