"""COCO metrics through visbricks equal pycocotools run by hand on hand-written COCO files."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visbricks.data.records import DetectionSet, ImageRecord
from visbricks.errors import ConfigError, DataError
from visbricks.metrics.coco import (
    COCO_STAT_NAMES,
    build_coco_gt,
    category_ids,
    coco_gt_dict,
    coco_image_ids,
    evaluate_coco,
    predictions_to_coco_results,
    write_results_json,
)

REAL_COCO = (
    Path(__file__).resolve().parents[2]
    / "shared/data/labelme/instance_segmentation/data_dataset_coco/annotations.json"
)
CLASSES = ["circle", "square", "star"]


def make_case(seed: int = 0, num_images: int = 8):
    """Records with small, medium and large objects (one crowd region) and imperfect predictions:
    jittered, mislabelled, missed, duplicated, plus background false positives."""
    rng = np.random.default_rng(seed)
    records, preds = [], []
    for i in range(num_images):
        sizes = rng.choice([16.0, 50.0, 130.0], size=int(rng.integers(1, 5)))
        xy = rng.integers(0, 60, (len(sizes), 2)) + rng.integers(0, 4, (len(sizes), 2)) / 4
        boxes = np.concatenate(
            [xy, xy + sizes[:, None] * rng.uniform(0.8, 1.2, (len(sizes), 2))], 1
        )
        boxes = boxes.astype(np.float32)
        labels = rng.integers(0, len(CLASSES), len(sizes))
        iscrowd = np.zeros(len(sizes), bool)
        iscrowd[0] = i == 3
        records.append(ImageRecord(f"img{i}.png", 200, 200, boxes, labels, iscrowd=iscrowd))
        pboxes, plabels = [], []
        for b, lab in zip(boxes.astype(np.float64), labels):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                wh = np.tile(b[2:] - b[:2], 2)
                pboxes.append(b + rng.normal(0, 0.08, 4) * wh)
                plabels.append(lab if rng.random() > 0.1 else (lab + 1) % len(CLASSES))
        for _ in range(rng.integers(0, 3)):
            xy0 = rng.uniform(0, 150, 2)
            pboxes.append(np.concatenate([xy0, xy0 + rng.uniform(10, 50, 2)]))
            plabels.append(int(rng.integers(0, len(CLASSES))))
        preds.append(
            {
                "boxes": np.array(pboxes).reshape(-1, 4),
                "labels": np.array(plabels, dtype=np.int64),
                "scores": rng.random(len(pboxes)),
            }
        )
    return DetectionSet(Path("."), CLASSES, records), preds


def handwritten_coco_files(dataset: DetectionSet, preds, tmp_path: Path) -> tuple[Path, Path]:
    """The COCO GT and results files written out by hand, independently of visbricks.metrics."""
    images, anns = [], []
    for i, r in enumerate(dataset.records):
        images.append({"id": i + 1, "file_name": r.file, "width": r.width, "height": r.height})
        for box, label, crowd in zip(r.boxes.tolist(), r.labels.tolist(), r.iscrowd.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(dataset.classes)]
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    results = []
    for i, p in enumerate(preds):
        for box, label, score in zip(
            p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
    res_file = tmp_path / "res.json"
    res_file.write_text(json.dumps(results))
    return gt_file, res_file


def pycocotools_stats(gt_file: Path, res_file: Path) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pycocotools_on_handwritten_files(tmp_path, seed):
    dataset, preds = make_case(seed)
    expected = pycocotools_stats(*handwritten_coco_files(dataset, preds, tmp_path))
    assert 0.05 < expected[0] < 0.95  # an informative case, neither empty nor perfect
    ids = coco_image_ids(dataset)
    # pycocotools itself: bit-for-bit (faster-coco-eval, the "auto" default when installed,
    # agrees to 1e-12, see test_faster_coco_eval_agrees_with_pycocotools).
    ours_file = evaluate_coco(
        dataset, write_results_json(preds, ids, tmp_path / "ours.json"), backend="pycocotools"
    )
    ours_list = evaluate_coco(
        dataset, predictions_to_coco_results(preds, ids), backend="pycocotools"
    )
    assert list(ours_file) == list(COCO_STAT_NAMES)
    assert list(ours_file.values()) == expected
    assert list(ours_list.values()) == expected


def test_prebuilt_coco_gt_is_reused(tmp_path):
    dataset, preds = make_case(4)
    results = predictions_to_coco_results(preds, coco_image_ids(dataset))
    gt = build_coco_gt(dataset)
    assert evaluate_coco(gt, results) == evaluate_coco(dataset, results)


def test_perfect_predictions_give_one():
    dataset, _ = make_case(5)
    preds = [
        {"boxes": r.boxes, "labels": r.labels, "scores": np.ones(len(r.boxes))}
        for r in dataset.records
    ]
    stats = evaluate_coco(dataset, predictions_to_coco_results(preds, coco_image_ids(dataset)))
    for name in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"):
        assert stats[name] == pytest.approx(1.0, abs=1e-12), name  # a mean of 1.0s


def test_empty_predictions_give_zero(tmp_path, capsys):
    dataset, _ = make_case(6, num_images=12)
    assert {"AP_small", "AP_medium", "AP_large"} <= set(evaluate_coco(dataset, []))
    empty = [{"boxes": np.zeros((0, 4)), "labels": [], "scores": []} for _ in dataset.records]
    path = write_results_json(empty, coco_image_ids(dataset), tmp_path / "empty.json")
    assert json.loads(path.read_text()) == []
    for stats in (evaluate_coco(dataset, []), evaluate_coco(dataset, path)):
        assert stats == dict.fromkeys(COCO_STAT_NAMES, 0.0)
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_missing_size_range_is_minus_one_like_pycocotools(tmp_path):
    record = ImageRecord("a.png", 300, 300, [[10, 10, 210, 210]], [0])  # one large object
    dataset = DetectionSet(Path("."), ["thing"], [record])
    pred = [{"boxes": [[12, 10, 210, 212]], "labels": [0], "scores": [0.9]}]
    expected = pycocotools_stats(
        *handwritten_coco_files(
            dataset,
            [
                {
                    k: np.asarray(v, dtype=float if k != "labels" else np.int64)
                    for k, v in pred[0].items()
                }
            ],
            tmp_path,
        )
    )
    stats = evaluate_coco(
        dataset, predictions_to_coco_results(pred, coco_image_ids(dataset)), backend="pycocotools"
    )
    assert list(stats.values()) == expected
    assert stats["AP_small"] == stats["AP_medium"] == -1.0 and stats["AP_large"] == stats["AP"]


def test_verbose_prints_pycocotools_summary(capsys):
    dataset, preds = make_case(7)
    evaluate_coco(
        dataset,
        predictions_to_coco_results(preds, coco_image_ids(dataset)),
        backend="pycocotools",
        verbose=True,
    )
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out


def test_area_is_the_mask_area_when_a_segmentation_exists():
    polygon = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]  # 20 x 10 inside a 100 x 100 box
    record = ImageRecord(
        "a.png", 128, 128, [[0, 0, 100, 100], [0, 0, 40, 40]], [0, 0], segmentations=[polygon, None]
    )
    gt = coco_gt_dict(DetectionSet(Path("."), ["thing"], [record]))
    masked, boxed = gt["annotations"]
    # pycocotools' own rasterisation of the same annotation, as COCO.annToMask does it.
    coco = COCO()
    coco.dataset = {**gt, "annotations": [masked]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    assert masked["area"] == float(coco.annToMask(masked).sum())
    assert 150 <= masked["area"] <= 250  # the polygon's, not the box's 10000
    assert boxed["area"] == 1600.0
    assert masked["segmentation"] == polygon and "segmentation" not in boxed


def test_bad_ground_truth_names_the_file():
    record = ImageRecord("photos/x.png", 64, 64, [[0, 0, 10, 10]], [3])
    with pytest.raises(DataError, match=r"photos/x.png: class id 3 outside 0..0"):
        coco_gt_dict(DetectionSet(Path("."), ["thing"], [record]))
    record = ImageRecord("photos/y.png", 64, 64, [[0, 0, 10, 10]], [0], segmentations=[[1.0, 2.0]])
    with pytest.raises(DataError, match="photos/y.png: object 0 has an unreadable segmentation"):
        coco_gt_dict(DetectionSet(Path("."), ["thing"], [record]))


def test_image_ids_follow_the_records_when_unique():
    records = [ImageRecord(f"{i}.png", 10, 10, image_id=i * 7) for i in range(3)]
    assert coco_image_ids(DetectionSet(Path("."), ["a"], records)) == [0, 7, 14]
    records = [ImageRecord(f"{i}.png", 10, 10) for i in range(3)]  # all 0: not usable
    assert coco_image_ids(DetectionSet(Path("."), ["a"], records)) == [1, 2, 3]


def test_category_ids_mapping_and_results_format():
    pred = [{"boxes": np.array([[1.0, 2.0, 11.0, 32.0]]), "labels": [1], "scores": [0.5]}]
    assert predictions_to_coco_results(pred, [42], category_ids=[5, 9]) == [
        {"image_id": 42, "category_id": 9, "bbox": [1.0, 2.0, 10.0, 30.0], "score": 0.5}
    ]


def test_bad_results_are_named(tmp_path):
    dataset, preds = make_case(8)
    results = predictions_to_coco_results(preds, coco_image_ids(dataset))
    with pytest.raises(DataError, match=r"image ids \[999\] are not in the ground truth"):
        evaluate_coco(dataset, [{**results[0], "image_id": 999}])
    with pytest.raises(DataError, match=r"category ids \[7\]"):
        evaluate_coco(dataset, [{**results[0], "category_id": 7}])
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match="nope.json"):
        evaluate_coco(dataset, missing)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(DataError, match="broken.json"):
        evaluate_coco(dataset, broken)
    with pytest.raises(DataError, match="lacks \\['score'\\]"):
        evaluate_coco(dataset, [{k: v for k, v in results[0].items() if k != "score"}])
    with pytest.raises(ConfigError, match="unknown COCO backend 'detectron'"):
        evaluate_coco(dataset, results, backend="detectron")
    with pytest.raises(DataError, match="2 prediction entries for 1 image ids"):
        predictions_to_coco_results(preds[:2], [1])


def test_missing_faster_coco_eval_says_how_to_install(monkeypatch):
    dataset, _ = make_case(9)
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    with pytest.raises(ConfigError, match="pip install faster-coco-eval"):
        evaluate_coco(dataset, [], backend="faster_coco_eval")


def test_faster_coco_eval_agrees_with_pycocotools():
    pytest.importorskip("faster_coco_eval")
    dataset, preds = make_case(10)
    results = predictions_to_coco_results(preds, coco_image_ids(dataset))
    fast = evaluate_coco(dataset, results, backend="faster_coco_eval")
    ref = evaluate_coco(dataset, results, backend="pycocotools")
    assert fast.keys() == ref.keys()
    np.testing.assert_allclose(list(fast.values()), list(ref.values()), rtol=0, atol=1e-12)
    assert evaluate_coco(dataset, [], backend="faster_coco_eval")["AP"] == 0.0


def test_real_labelme_annotations_match_pycocotools_on_the_file():
    if not REAL_COCO.is_file():
        pytest.skip(f"real data not found at {REAL_COCO}")
    data = json.loads(REAL_COCO.read_text())
    classes = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    assert [c["id"] for c in sorted(data["categories"], key=lambda c: c["id"])] == list(
        range(len(classes))
    )  # so a category id is also the class id below
    records, by_image = [], {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in data["images"]:
        anns = by_image.get(im["id"], [])
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        records.append(
            ImageRecord(
                im["file_name"],
                im["width"],
                im["height"],
                xyxy,
                [a["category_id"] for a in anns],
                segmentations=[a["segmentation"] for a in anns],
                image_id=im["id"],
            )
        )
    # The file's own category ids (0..20), which results must carry to score against it.
    dataset = DetectionSet(REAL_COCO.parent, classes, records, category_ids=list(range(21)))

    # Human polygons: our mask areas agree with labelme's (its own rasteriser) to a few percent.
    ours = [a["area"] for a in coco_gt_dict(dataset)["annotations"]]
    theirs = [a["area"] for a in data["annotations"]]
    np.testing.assert_allclose(ours, theirs, rtol=0.08)

    rng = np.random.default_rng(0)
    preds = []
    for r in records:
        wh = np.tile(r.boxes[:, 2:] - r.boxes[:, :2], (1, 2)).astype(np.float64)
        preds.append(
            {
                "boxes": r.boxes + rng.normal(0, 0.06, r.boxes.shape) * wh,
                "labels": r.labels,
                "scores": rng.random(len(r.boxes)),
            }
        )
    # Results carry the file's own category ids (labelme's start at 0 with _background_).
    direct = predictions_to_coco_results(preds, coco_image_ids(dataset), category_ids(dataset))
    assert {r["category_id"] for r in direct} <= {c["id"] for c in data["categories"]}
    ours_stats = evaluate_coco(dataset, direct, backend="pycocotools")
    # labelme numbers annotations from 0, but COCOeval stores a match as the matched annotation's
    # id and reads 0 as "unmatched", so as written the file turns hits on annotation 0 into false
    # positives. build_coco_gt numbers from 1; the reference gets the same shift.
    fixed = {**data, "annotations": [{**a, "id": a["id"] + 1} for a in data["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = fixed
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(direct), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert list(ours_stats.values()) == ev.stats.tolist()
    # Handed the file as it is, evaluate_coco renumbers the annotations itself.
    with contextlib.redirect_stdout(io.StringIO()):
        as_written = COCO(str(REAL_COCO))
    assert list(evaluate_coco(as_written, direct, "pycocotools").values()) == ev.stats.tolist()
    assert 0.2 < ours_stats["AP"] < 1.0
