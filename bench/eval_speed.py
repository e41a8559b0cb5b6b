"""Speed and agreement of visbricks' VOC AP on a COCO-val-sized result set.

    python bench/eval_speed.py [--images 5000] [--seed 0]

Generates a deterministic ground truth (about 5 objects per image, 20 classes, some ``difficult``)
and about 20 detections per image (jittered copies of the objects, some missed or duplicated,
some with the wrong class, plus random false positives), then times and cross-checks:

1. visbricks ``evaluate_voc`` against a straightforward per-detection loop transcription of the
   devkit (below, sharing no code with visbricks): must agree to 1e-9, both interpolations.
2. visbricks all-point AP50 against pycocotools' AP at IoU 0.5, on the same data with every object
   non-difficult (COCO has no such notion). They are different estimators of the same area, so
   they agree only to a tolerance, justified here:

   - Matching. VOC lets a detection take its best-IoU ground truth even if already matched (then
     it is a false positive); COCO lets it take the best *unmatched* one. The two differ only when
     one detection reaches IoU >= 0.5 with two ground truths. Objects here are drawn in disjoint
     grid cells, and IoU(D, A) >= 0.5 needs more than half of D inside A, so no box can reach two
     disjoint boxes: the matchings are identical. Scores are continuous (no ties), every image
     keeps well under COCO's 100 detections per class, and the "all" area range drops nothing.
   - Interpolation, the only difference left. With f the (non-increasing) precision envelope,
     VOC computes the integral of f over recall [0, 1] and COCO the mean of f at the 101 recalls
     0, 0.01, ..., 1. For non-increasing f the integral lies between the left and right Riemann
     sums at step 1/100, and comparing those with the 101-point mean bounds the difference by
     1/100 per class, hence by 1/100 for the mean over classes. Tolerance: 0.01.
3. The full COCO stats through ``evaluate_coco`` with pycocotools and with faster-coco-eval (the
   default backend when installed): all 12 numbers must agree to 1e-12; prints the time ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools.cocoeval import COCOeval

from visbricks.data.records import DetectionSet, ImageRecord
from visbricks.metrics.coco import (
    build_coco_gt,
    coco_image_ids,
    evaluate_coco,
    predictions_to_coco_results,
)
from visbricks.metrics.voc import evaluate_voc

NUM_CLASSES = 20
IMAGE_W, IMAGE_H, CELL = 640, 480, 160  # a 4 x 3 grid of cells, at most one object per cell
COCO_TOLERANCE = 0.01  # see the module docstring


def generate(num_images: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    cells = np.array([(x, y) for y in range(0, IMAGE_H, CELL) for x in range(0, IMAGE_W, CELL)])
    preds, gts = [], []
    for _ in range(num_images):
        n = min(int(rng.poisson(5)), len(cells))
        origin = cells[rng.choice(len(cells), n, replace=False)].astype(np.float64)
        wh = rng.uniform(12, CELL - 8, (n, 2))
        xy = origin + rng.uniform(0, 1, (n, 2)) * (CELL - wh)
        gboxes = np.concatenate([xy, xy + wh], axis=1)
        glabels = rng.integers(0, NUM_CLASSES, n)
        gts.append({"boxes": gboxes, "labels": glabels, "difficult": rng.random(n) < 0.1})

        copies = rng.choice([0, 1, 1, 1, 1, 2], size=n)  # missed, found, found twice
        src = np.repeat(np.arange(n), copies)
        jitter = rng.normal(0, 0.1, (len(src), 4)) * np.tile(wh[src], 2)
        tboxes = gboxes[src] + jitter
        tlabels = np.where(
            rng.random(len(src)) < 0.1, rng.integers(0, NUM_CLASSES, len(src)), glabels[src]
        )
        m = max(0, int(rng.poisson(20)) - len(src))  # random false positives up to ~20 in all
        fxy = rng.uniform(0, 1, (m, 2)) * [IMAGE_W - 20, IMAGE_H - 20]
        fboxes = np.concatenate([fxy, fxy + rng.uniform(10, 200, (m, 2))], axis=1)
        boxes = np.concatenate([tboxes, fboxes])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
        # True positives tend to score higher, as from a real detector.
        scores = np.concatenate([rng.beta(5, 2, len(src)), rng.beta(2, 5, m)])
        labels = np.concatenate([tlabels, rng.integers(0, NUM_CLASSES, m)])
        preds.append({"boxes": boxes, "labels": labels, "scores": scores})
    return preds, gts


def devkit_reference(preds, gts, num_classes, thr=0.5, use_07_metric=False) -> np.ndarray:
    """VOCevaldet.m written out one detection at a time, continuous boxes (no +1)."""
    aps = np.full(num_classes, np.nan)
    for c in range(num_classes):
        recs, npos = [], 0
        for gt in gts:
            sel = gt["labels"] == c
            diff = gt["difficult"][sel].tolist()
            recs.append(
                {"bbox": gt["boxes"][sel].tolist(), "diff": diff, "det": [False] * len(diff)}
            )
            npos += diff.count(False)
        dets = [
            (i, s, b)
            for i, p in enumerate(preds)
            for b, lab, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist())
            if lab == c
        ]
        dets.sort(key=lambda d: -d[1])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for d, (i, _, bb) in enumerate(dets):
            ovmax, jmax = -math.inf, -1
            for j, g in enumerate(recs[i]["bbox"]):
                iw = max(min(bb[2], g[2]) - max(bb[0], g[0]), 0.0)
                ih = max(min(bb[3], g[3]) - max(bb[1], g[1]), 0.0)
                inter = iw * ih
                ov = inter / (
                    (bb[2] - bb[0]) * (bb[3] - bb[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
                )
                if ov > ovmax:
                    ovmax, jmax = ov, j
            if ovmax >= thr:
                if not recs[i]["diff"][jmax]:
                    if not recs[i]["det"][jmax]:
                        tp[d] = 1
                        recs[i]["det"][jmax] = True
                    else:
                        fp[d] = 1
            else:
                fp[d] = 1
        if npos == 0:
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        if use_07_metric:
            aps[c] = sum(
                (max([p for r, p in zip(rec, prec) if r >= t], default=0.0)) / 11.0
                for t in np.arange(0.0, 1.1, 0.1)
            )
        else:
            mrec = [0.0, *rec, 1.0]
            mpre = [0.0, *prec, 0.0]
            for k in range(len(mpre) - 1, 0, -1):
                mpre[k - 1] = max(mpre[k - 1], mpre[k])
            idx = np.array([k for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k]])
            aps[c] = np.sum(
                (np.array(mrec)[idx + 1] - np.array(mrec)[idx]) * np.array(mpre)[idx + 1]
            )
    return aps


def pycocotools_ap50(preds, gts) -> tuple[float, float, float]:
    """(AP at IoU 0.5, seconds to build the ground truth, seconds to evaluate)."""
    records = [
        ImageRecord(f"{i:05d}.jpg", IMAGE_W, IMAGE_H, g["boxes"], g["labels"])
        for i, g in enumerate(gts)
    ]
    # float32 records would round the boxes; the VOC side must see exactly the same numbers.
    dataset = DetectionSet(Path("."), [f"class{c}" for c in range(NUM_CLASSES)], records)
    t0 = time.perf_counter()
    gt = build_coco_gt(dataset)
    t1 = time.perf_counter()
    results = predictions_to_coco_results(preds, coco_image_ids(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # IoU .5, all recalls, classes, area all, 100
    t2 = time.perf_counter()
    per_class = [p[p > -1].mean() for p in precision.T if (p > -1).any()]
    return float(np.mean(per_class)), t1 - t0, t2 - t1


def coco_backends(preds, gts) -> list[tuple[str, float, float, str]]:
    """Full COCO stats through evaluate_coco with pycocotools and with faster-coco-eval (the
    default when installed): seconds each, and whether all 12 numbers agree to 1e-12."""
    records = [
        ImageRecord(f"{i:05d}.jpg", IMAGE_W, IMAGE_H, g["boxes"], g["labels"])
        for i, g in enumerate(gts)
    ]
    dataset = DetectionSet(Path("."), [f"class{c}" for c in range(NUM_CLASSES)], records)
    results = predictions_to_coco_results(preds, coco_image_ids(dataset))
    stats, rows = {}, []
    for backend in ("pycocotools", "faster_coco_eval"):
        t0 = time.perf_counter()
        try:
            stats[backend] = evaluate_coco(dataset, results, backend=backend)
        except Exception as e:  # noqa: BLE001 - faster-coco-eval not installed: say so
            rows.append((f"COCO {backend}: {type(e).__name__}", math.nan, math.nan, "skipped"))
            continue
        rows.append((f"COCO AP[.5:.95] via {backend}", time.perf_counter() - t0, 0.0, ""))
    if len(stats) == 2:
        a, b = stats["pycocotools"], stats["faster_coco_eval"]
        diff = max(abs(a[k] - b[k]) for k in a)
        ratio = rows[0][1] / rows[1][1]
        check = f"max |d| {diff:.1e} <= 1e-12: {'ok' if diff <= 1e-12 else 'FAIL'}; {ratio:.1f}x"
        rows[1] = (rows[1][0], rows[1][1], b["AP"], check)
        rows[0] = (rows[0][0], rows[0][1], a["AP"], "")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    preds, gts = generate(args.images, args.seed)
    num_dets = sum(len(p["boxes"]) for p in preds)
    num_gts = sum(len(g["boxes"]) for g in gts)
    print(f"{args.images} images, {num_gts} objects, {num_dets} detections, {NUM_CLASSES} classes")
    rows, ok = [], True

    for use_07 in (False, True):
        name = "11-point" if use_07 else "all-point"
        t0 = time.perf_counter()
        ours = evaluate_voc(preds, gts, NUM_CLASSES, use_07_metric=use_07)
        t1 = time.perf_counter()
        ref = devkit_reference(preds, gts, NUM_CLASSES, use_07_metric=use_07)
        t2 = time.perf_counter()
        diff = float(np.nanmax(np.abs(ours.ap - ref)))
        agree = diff <= 1e-9 and np.array_equal(np.isnan(ours.ap), np.isnan(ref))
        ok &= agree
        rows.append((f"visbricks VOC {name}, difficult", t1 - t0, ours.map, ""))
        rows.append(
            (
                f"devkit loop {name}, difficult",
                t2 - t1,
                float(np.nanmean(ref)),
                f"max |dAP| {diff:.1e} <= 1e-9: {'ok' if agree else 'FAIL'}",
            )
        )

    easy = [{**g, "difficult": np.zeros(len(g["labels"]), bool)} for g in gts]
    # The same float32 rounding the COCO ground truth goes through, so both see the same boxes.
    easy = [{**g, "boxes": g["boxes"].astype(np.float32).astype(np.float64)} for g in easy]
    t0 = time.perf_counter()
    voc = evaluate_voc(preds, easy, NUM_CLASSES)
    t1 = time.perf_counter()
    coco_ap50, t_gt, t_eval = pycocotools_ap50(preds, easy)
    diff = abs(voc.map - coco_ap50)
    agree = diff <= COCO_TOLERANCE
    ok &= agree
    rows.append(("visbricks VOC all-point, none difficult", t1 - t0, voc.map, ""))
    rows.append(
        (
            f"pycocotools AP@0.5 (+{t_gt:.2f}s GT build)",
            t_eval,
            coco_ap50,
            f"|d| {diff:.4f} <= {COCO_TOLERANCE}: {'ok' if agree else 'FAIL'}",
        )
    )

    coco_rows = coco_backends(preds, easy)
    ok &= all("FAIL" not in check for *_, check in coco_rows)
    rows += coco_rows

    print(f"\n{'evaluator':<44} {'seconds':>8} {'mAP50':>8}  check  (COCO rows: AP[.5:.95])")
    for label, seconds, value, check in rows:
        print(f"{label:<44} {seconds:>8.2f} {value:>8.5f}  {check}")
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
