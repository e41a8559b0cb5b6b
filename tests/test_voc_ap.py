"""VOC AP against an independent loop-based transcription of the devkit, and hand-counted cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visbricks.data.records import ImageRecord
from visbricks.errors import ConfigError, DataError
from visbricks.metrics.detection_plots import (
    detection_confusion_matrix,
    plot_confusion_matrix,
    plot_pr_curves,
)
from visbricks.metrics.voc import evaluate_voc, voc_ap

# ---------------------------------------------------------------------------------------------
# Reference: VOCevaldet.m / voc_eval.py written out detection by detection, ground truth by ground
# truth, with plain Python floats. Continuous boxes, so no +1 in widths. Shares no code with voc.py.


def devkit_ap(rec: list[float], prec: list[float], use_07_metric: bool) -> float:
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0
            for r, q in zip(rec, prec):
                if r >= t and q > p:
                    p = q
            ap = ap + p / 11.0
        return ap
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    steps = [i for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i]]
    return float(np.sum(np.array([(mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in steps])))


def devkit_class_ap(preds, gts, cls: int, thr: float, use_07_metric: bool) -> float | None:
    class_recs, npos = [], 0
    for gt in gts:
        boxes = [list(map(float, b)) for b, lab in zip(gt["boxes"], gt["labels"]) if lab == cls]
        diff = [bool(d) for d, lab in zip(gt["difficult"], gt["labels"]) if lab == cls]
        class_recs.append({"bbox": boxes, "difficult": diff, "det": [False] * len(boxes)})
        npos += sum(1 for d in diff if not d)
    dets = []  # (image, score, box) in file order: images in order, detections in order
    for i, p in enumerate(preds):
        for box, lab, score in zip(p["boxes"], p["labels"], p["scores"]):
            if lab == cls:
                dets.append((i, float(score), list(map(float, box))))
    dets = sorted(dets, key=lambda d: -d[1])  # Python's sort is stable
    tp, fp = [], []
    for image, _, bb in dets:
        R = class_recs[image]
        ovmax, jmax = -math.inf, -1
        for j, g in enumerate(R["bbox"]):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]), 0.0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]), 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inters
            ov = inters / uni
            if ov > ovmax:
                ovmax, jmax = ov, j
        t = f = 0.0
        if ovmax >= thr:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    t = 1.0
                    R["det"][jmax] = True
                else:
                    f = 1.0
        else:
            f = 1.0
        tp.append(t)
        fp.append(f)
    if npos == 0:
        return None
    ctp = np.cumsum(tp)
    cfp = np.cumsum(fp)
    rec = (ctp / float(npos)).tolist()
    prec = (ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)).tolist()
    return devkit_ap(rec, prec, use_07_metric)


# ---------------------------------------------------------------------------------------------


def random_case(seed: int, num_classes: int = 4):
    """Images with 0..5 objects (some difficult, some images empty), detections made of jittered
    copies (sometimes mislabelled or duplicated) and random boxes, scores with ties. The last class
    is annotated but never predicted."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(rng.integers(1, 9)):
        n = int(rng.integers(0, 6)) if rng.random() > 0.2 else 0
        xy = rng.uniform(0, 80, (n, 2))
        gboxes = np.concatenate([xy, xy + rng.uniform(4, 40, (n, 2))], axis=1)
        glabels = rng.integers(0, num_classes, n)
        gts.append({"boxes": gboxes, "labels": glabels, "difficult": rng.random(n) < 0.2})
        boxes, labels = [], []
        for b, lab in zip(gboxes, glabels):
            for _ in range(rng.choice([0, 1, 1, 2])):  # missed, found, found twice
                wh = b[2:] - b[:2]
                boxes.append(b + rng.normal(0, 0.12, 4) * np.concatenate([wh, wh]))
                keep = lab != num_classes - 1 and rng.random() > 0.15
                labels.append(lab if keep else rng.integers(0, num_classes - 1))
        for _ in range(rng.integers(0, 4)):  # background false positives
            xy0 = rng.uniform(0, 80, 2)
            boxes.append(np.concatenate([xy0, xy0 + rng.uniform(4, 40, 2)]))
            labels.append(rng.integers(0, num_classes - 1))
        boxes = np.array(boxes).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        scores = np.round(rng.random(len(boxes)), 1)  # one decimal: plenty of tied scores
        preds.append({"boxes": boxes, "labels": np.array(labels, dtype=np.int64), "scores": scores})
    return preds, gts


@pytest.mark.parametrize("use_07_metric", [False, True])
def test_matches_devkit_reference_on_random_cases(use_07_metric):
    num_classes = 4
    compared = never_predicted = 0
    for seed in range(150):
        preds, gts = random_case(seed, num_classes)
        result = evaluate_voc(preds, gts, num_classes, use_07_metric=use_07_metric)
        expected = [devkit_class_ap(preds, gts, c, 0.5, use_07_metric) for c in range(num_classes)]
        for c, ref in enumerate(expected):
            if ref is None:
                assert math.isnan(result.ap[c]) and result.num_gt[c] == 0
            else:
                assert abs(result.ap[c] - ref) <= 1e-12, (seed, c, result.ap[c], ref)
                compared += 1
        defined = [e for e in expected if e is not None]
        if defined:
            assert abs(result.map - sum(defined) / len(defined)) <= 1e-12
        else:
            assert math.isnan(result.map)
        assert result.num_det[num_classes - 1] == 0
        never_predicted += result.num_gt[num_classes - 1] > 0
    assert compared > 300 and never_predicted > 50


def test_other_iou_threshold_matches_reference():
    for seed in range(30):
        preds, gts = random_case(1000 + seed)
        result = evaluate_voc(preds, gts, 4, iou_threshold=0.7)
        for c in range(4):
            ref = devkit_class_ap(preds, gts, c, 0.7, False)
            assert (ref is None and math.isnan(result.ap[c])) or abs(result.ap[c] - ref) <= 1e-12


def _img(boxes, labels, scores=None, difficult=None):
    out = {"boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.array(labels)}
    if scores is not None:
        out["scores"] = np.array(scores, dtype=np.float64)
    if difficult is not None:
        out["difficult"] = np.array(difficult, dtype=bool)
    return out


A, B, C = [0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]


@pytest.mark.parametrize("use_07_metric", [False, True])
def test_perfect_detections_give_ap_one(use_07_metric):
    gts = [_img([A, B], [0, 1]), _img([C], [1])]
    preds = [_img([A, B], [0, 1], [0.9, 0.8]), _img([C], [1], [0.7])]
    result = evaluate_voc(preds, gts, 2, use_07_metric=use_07_metric)
    # 11 x (1/11) sums to 1.0000000000000002 in floating point, in the devkit too.
    np.testing.assert_allclose(result.ap, [1.0, 1.0], rtol=0, atol=1e-15)
    assert result.map == pytest.approx(1.0, abs=1e-15)
    assert result.num_tp.tolist() == [1, 2]


def test_duplicate_detection_is_a_false_positive():
    gts = [_img([A, B], [0, 0])]
    # The duplicate of A outscores the detection of B, so it sits inside the curve.
    preds = [_img([A, A, B], [0, 0, 0], [0.9, 0.8, 0.7])]
    r = evaluate_voc(preds, gts, 1)
    np.testing.assert_array_equal(r.recall[0], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r.precision[0], [1.0, 0.5, 2 / 3], rtol=0, atol=1e-15)
    assert r.ap[0] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3), abs=1e-15)  # 5/6
    # 11-point: thresholds 0..0.5 see precision 1, the five above 0.5 see 2/3.
    r07 = evaluate_voc(preds, gts, 1, use_07_metric=True)
    assert r07.ap[0] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-15)
    assert r.num_tp[0] == 2 and r.num_det[0] == 3


def test_missed_object_lowers_recall_and_ap():
    gts = [_img([A, B], [0, 0]), _img([C], [0])]
    preds = [_img([A, B], [0, 0], [0.9, 0.8]), _img([], [], [])]
    r = evaluate_voc(preds, gts, 1)
    assert r.recall[0][-1] == pytest.approx(2 / 3)
    assert r.ap[0] == pytest.approx(2 / 3, abs=1e-15)
    # 11-point: recall 2/3 reaches the thresholds 0 .. 0.6 (seven of them).
    assert evaluate_voc(preds, gts, 1, use_07_metric=True).ap[0] == pytest.approx(7 / 11)


def test_detecting_a_difficult_object_changes_nothing():
    gts = [_img([A, B], [0, 0], difficult=[False, True])]
    without = evaluate_voc([_img([A], [0], [0.9])], gts, 1)
    # A detection of B outscoring the real one: counted, it would be a false positive at rank 1.
    with_b = evaluate_voc([_img([B, A], [0, 0], [0.95, 0.9])], gts, 1)
    assert with_b.ap[0] == without.ap[0] == 1.0
    assert with_b.num_gt[0] == 1 and with_b.num_tp[0] == 1
    np.testing.assert_array_equal(with_b.precision[0], without.precision[0])
    np.testing.assert_array_equal(with_b.recall[0], without.recall[0])
    # A missed difficult object does not lower recall either.
    assert evaluate_voc([_img([A], [0], [0.9])], gts, 1).recall[0][-1] == 1.0


def test_match_at_exactly_the_threshold_counts_like_vocevaldet():
    gts = [_img([[0, 0, 10, 10]], [0])]
    preds = [_img([[0, 0, 10, 5]], [0], [0.9])]  # IoU = 50 / 100 = 0.5 exactly
    assert evaluate_voc(preds, gts, 1).ap[0] == 1.0
    assert evaluate_voc(preds, gts, 1, iou_threshold=0.51).ap[0] == 0.0


def test_voc07_thresholds_are_the_devkit_floats():
    # recall 3/10 is below np.arange's 0.30000000000000004, so it misses the "0.3" threshold.
    gts = [_img([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], [0] * 10)]
    preds = [_img([[i * 20, 0, i * 20 + 10, 10] for i in range(3)], [0] * 3, [0.9, 0.8, 0.7])]
    assert evaluate_voc(preds, gts, 1, use_07_metric=True).ap[0] == pytest.approx(3 / 11)


def test_voc_ap_edge_cases():
    assert voc_ap([], []) == 0.0
    assert voc_ap([], [], use_07_metric=True) == 0.0
    # Precision rising again later lifts the envelope before it.
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 0.75]) == pytest.approx(0.5 + 0.5 * 0.75)
    with pytest.raises(DataError, match="recall has 2 values but precision has 1"):
        voc_ap([0.1, 0.2], [1.0])


def test_class_without_ground_truth_is_nan_and_left_out_of_map():
    gts = [_img([A], [0])]
    preds = [_img([A, B], [0, 1], [0.9, 0.8])]  # class 1 is predicted but never annotated
    r = evaluate_voc(preds, gts, 3)
    assert r.ap[0] == 1.0 and math.isnan(r.ap[1]) and math.isnan(r.ap[2])
    assert r.map == 1.0
    assert r.as_dict(["cat", "dog", "cow"])["mAP50"] == 1.0
    assert math.isnan(evaluate_voc([_img([], [], [])], [_img([], [])], 2).map)


def test_torch_inputs_and_image_records_give_the_same_result():
    preds, gts = random_case(7)
    ref = evaluate_voc(preds, gts, 4)
    tpreds = [{k: torch.as_tensor(v) for k, v in p.items()} for p in preds]
    records = [
        ImageRecord("x.jpg", 100, 100, g["boxes"], g["labels"], difficult=g["difficult"])
        for g in gts
    ]
    # float32 records round the boxes, so compare with float32-rounded references.
    gts32 = [{**g, "boxes": g["boxes"].astype(np.float32)} for g in gts]
    np.testing.assert_array_equal(evaluate_voc(tpreds, gts, 4).ap, ref.ap)
    np.testing.assert_array_equal(
        evaluate_voc(preds, records, 4).ap, evaluate_voc(preds, gts32, 4).ap
    )


def test_bad_input_names_the_entry():
    gts = [_img([A], [0])]
    with pytest.raises(DataError, match="1 prediction entries for 2 ground-truth images"):
        evaluate_voc([_img([A], [0], [0.9])], gts * 2, 1)
    with pytest.raises(DataError, match=r"predictions\[0\]: class id 3 outside 0..1"):
        evaluate_voc([_img([A], [3], [0.9])], gts, 2)
    with pytest.raises(DataError, match=r"predictions\[0\]: missing key 'scores'"):
        evaluate_voc([_img([A], [0])], gts, 1)
    with pytest.raises(DataError, match=r"ground_truths\[0\]: 'boxes' must have shape \(N, 4\)"):
        evaluate_voc([_img([A], [0], [0.9])], [{"boxes": np.zeros((1, 3)), "labels": [0]}], 1)
    with pytest.raises(DataError, match=r"'scores' has 2 entries but 'boxes' has 1"):
        evaluate_voc([_img([A], [0], [0.9, 0.1])], gts, 1)
    with pytest.raises(ConfigError, match="iou_threshold"):
        evaluate_voc([_img([A], [0], [0.9])], gts, 1, iou_threshold=0.0)


# --- detection_plots: confusion matrix and figures --------------------------------------------


def test_detection_confusion_matrix_hand_counted():
    D = [100, 100, 130, 130]
    B_shift = [21, 21, 41, 41]  # IoU with B: 361/439 = 0.82
    gts = [_img([A, B, C], [0, 1, 2]), _img([A, B], [0, 0], difficult=[True, False])]
    preds = [
        # A right; B called class 2; a box on nothing; C only found below the score threshold.
        _img([A, B, D, C], [0, 2, 1, 2], [0.9, 0.8, 0.7, 0.1]),
        # A is difficult; two boxes on B: the exact one wins on IoU despite its lower score.
        _img([A, B_shift, B], [0, 1, 0], [0.9, 0.95, 0.8]),
    ]
    m = detection_confusion_matrix(preds, gts, num_classes=3)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 2  # image 1 A, image 2 B
    expected[2, 1] = 1  # B predicted as class 2
    expected[1, 3] = 2  # the box on background, and the shifted box that lost B to the exact one
    expected[3, 2] = 1  # C missed
    np.testing.assert_array_equal(m, expected)
    # Lowering the score threshold finds C.
    m_low = detection_confusion_matrix(preds, gts, num_classes=3, score_threshold=0.05)
    assert m_low[2, 2] == 1 and m_low[3, 2] == 0


def test_plots_are_written(tmp_path):
    from PIL import Image

    preds, gts = random_case(3)
    result = evaluate_voc(preds, gts, 4)
    pr = plot_pr_curves(result, ["a", "b", "c", "d"], tmp_path / "plots" / "pr_curve.png")
    assert Image.open(pr).size == (960, 720)
    det = detection_confusion_matrix(preds, gts, 4)
    cm = plot_confusion_matrix(det, ["a", "b", "c", "d"], tmp_path / "cm.png")
    cls = plot_confusion_matrix(np.eye(3) * 5, ["x", "y", "z"], tmp_path / "cls.png", rows="true")
    for path in (cm, cls):
        assert Image.open(path).size[0] > 500
    with pytest.raises(ConfigError, match="2 class names for a 5x5 confusion matrix"):
        plot_confusion_matrix(det, ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="3 class names given for a result with 4 classes"):
        plot_pr_curves(result, ["a", "b", "c"], tmp_path / "bad.png")
