"""Depth metrics against a straightforward per-image numpy implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visbricks.errors import ConfigError, DataError
from visbricks.metrics.depth import compute_depth_errors, evaluate_depth

MIN_D, MAX_D = 1e-3, 80.0
KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def reference_errors(gt: list[float], pred: list[float]) -> dict[str, float]:
    n = len(gt)
    abs_rel = sum(abs(g - p) / g for g, p in zip(gt, pred)) / n
    sq_rel = sum((g - p) ** 2 / g for g, p in zip(gt, pred)) / n
    rmse = (sum((g - p) ** 2 for g, p in zip(gt, pred)) / n) ** 0.5
    rmse_log = (sum((np.log(g) - np.log(p)) ** 2 for g, p in zip(gt, pred)) / n) ** 0.5
    ratio = [max(g / p, p / g) for g, p in zip(gt, pred)]
    a = [sum(r < 1.25**k for r in ratio) / n for k in (1, 2, 3)]
    return dict(zip(KEYS, [abs_rel, sq_rel, rmse, rmse_log, *a]))


def reference_evaluate(gts, preds, median_scaling=True):
    per_image, baseline, ratios = [], [], []
    for gt, pred in zip(gts, preds):
        if pred.shape != gt.shape:  # PIL's bilinear resize, an independent implementation
            img = Image.fromarray(pred.astype(np.float32))
            pred = np.asarray(img.resize(gt.shape[::-1], Image.BILINEAR), dtype=np.float64)
        g_valid, p_valid = [], []
        for i in range(gt.shape[0]):
            for j in range(gt.shape[1]):
                if MIN_D < gt[i, j] < MAX_D:
                    g_valid.append(float(gt[i, j]))
                    p_valid.append(float(pred[i, j]))
        med = float(np.median(g_valid))
        ratio = med / float(np.median(p_valid))
        ratios.append(ratio)
        scale = ratio if median_scaling else 1.0
        scaled = [min(max(p * scale, MIN_D), MAX_D) for p in p_valid]
        per_image.append(reference_errors(g_valid, scaled))
        baseline.append(reference_errors(g_valid, [med] * len(g_valid)))
    out = {k: np.mean([e[k] for e in per_image]) for k in KEYS}
    out.update({f"baseline_{k}": np.mean([e[k] for e in baseline]) for k in KEYS})
    out["scale_ratio_mean"] = np.mean(ratios)
    out["scale_ratio_std"] = np.std(ratios)
    return out


def random_scene(rng, n=4, size=(12, 20)):
    gts, preds = [], []
    for _ in range(n):
        gt = rng.uniform(1.0, 100.0, size)  # some beyond MAX_D: excluded
        gt[rng.random(size) < 0.3] = 0.0  # sparse like LiDAR: missing
        pred = gt * rng.uniform(0.05, 0.2) * np.exp(rng.normal(scale=0.3, size=size))
        pred[gt == 0] = rng.uniform(1.0, 5.0)
        gts.append(gt)
        preds.append(pred)
    return gts, preds


@pytest.mark.parametrize("median_scaling", [True, False])
def test_evaluate_depth_matches_reference(median_scaling):
    rng = np.random.default_rng(0)
    gts, preds = random_scene(rng)
    got = evaluate_depth(gts, preds, MIN_D, MAX_D, median_scaling=median_scaling)
    want = reference_evaluate(gts, preds, median_scaling=median_scaling)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["num_images"] == len(gts)


def test_lower_resolution_disparity_is_resized_to_the_ground_truth():
    rng = np.random.default_rng(1)
    gts, _ = random_scene(rng, n=3, size=(16, 24))
    disps = [rng.uniform(0.05, 1.0, (8, 12)) for _ in gts]
    # The reference inverts after resizing, like evaluate_depth with pred_is_disp.
    resized_disps = [
        np.asarray(Image.fromarray(d.astype(np.float32)).resize((24, 16), Image.BILINEAR))
        for d in disps
    ]
    want = reference_evaluate(gts, [1.0 / d.astype(np.float64) for d in resized_disps])
    got = evaluate_depth(
        torch.tensor(np.stack(gts)),
        [torch.tensor(d)[None] for d in disps],
        MIN_D,
        MAX_D,
        pred_is_disp=True,
    )
    for key in ("abs_rel", "rmse", "a1", "scale_ratio_mean"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key


def test_compute_depth_errors_matches_reference():
    rng = np.random.default_rng(2)
    gt, pred = rng.uniform(0.5, 50, 200), rng.uniform(0.5, 50, 200)
    got = compute_depth_errors(torch.tensor(gt), pred)
    for key, value in reference_errors(list(gt), list(pred)).items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_median_scaling_makes_a_scaled_prediction_perfect():
    rng = np.random.default_rng(3)
    gts, _ = random_scene(rng)
    scales = [0.1, 2.5, 7.0, 0.5]
    preds = [gt.clip(min=0.5) / s for gt, s in zip(gts, scales)]
    m = evaluate_depth(gts, preds, MIN_D, MAX_D)
    assert m["abs_rel"] == pytest.approx(0, abs=1e-12)
    assert m["rmse"] == pytest.approx(0, abs=1e-9)
    assert m["a1"] == 1.0
    assert m["scale_ratio_mean"] == pytest.approx(np.mean(scales))
    assert m["scale_ratio_std"] == pytest.approx(np.std(scales))
    # The constant-median baseline is a real, worse reference point.
    assert m["baseline_abs_rel"] > 0.3
    unscaled = evaluate_depth(gts, preds, MIN_D, MAX_D, median_scaling=False)
    assert unscaled["abs_rel"] > 0.5


def test_bad_inputs_are_reported():
    gt = np.zeros((2, 4, 4))
    with pytest.raises(DataError, match="no ground-truth pixel"):
        evaluate_depth(gt, np.ones((2, 4, 4)), MIN_D, MAX_D)
    with pytest.raises(DataError, match="2 ground-truth depth maps but 3 predictions"):
        evaluate_depth(gt + 1, np.ones((3, 4, 4)), MIN_D, MAX_D)
    with pytest.raises(DataError, match="prediction 1"):
        evaluate_depth(gt + 1, np.stack([np.ones((4, 4)), -np.ones((4, 4))]), MIN_D, MAX_D)
    with pytest.raises(ConfigError, match="min_depth"):
        evaluate_depth(gt + 1, np.ones((2, 4, 4)), 10.0, 1.0)
    with pytest.raises(DataError, match=r"pred_depths_or_disps\[0\]"):
        evaluate_depth([gt[0] + 1], [np.ones((2, 4, 4))], MIN_D, MAX_D)
