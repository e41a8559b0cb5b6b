"""``visbricks eval --predictions PRED LABELS``: prediction files scored against labels, no model.

Per layout (TuSimple JSON lines, CULane .lines.txt folders, COCO results, class-index PNGs):
labels written by hand or by the project's writers in tmp, perfect predictions score 1, a
perturbed prediction scores what an independent computation in the test says, and bad inputs
are one-line errors that name the file (and line) at fault.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, digest, run_cli
from visbricks.metrics.lanes import culane_image, prf, tusimple_f1, tusimple_image

ROWS = list(range(160, 720, 10))  # TuSimple's h_samples


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # A default output that falls back to the working folder lands in tmp, never in the repo.
    monkeypatch.chdir(tmp_path)


def _metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


# --------------------------------------------------------------------------- TuSimple
def _tusimple_labels(folder: Path) -> list[dict]:
    """Three frames of three straight-ish lanes each (x per row, -2 above the lane's top)."""
    frames = []
    for i in range(3):
        lanes = []
        for k in range(3):
            lanes.append([round(300 + 300 * k + (y - 160) * (0.5 - 0.4 * k), 2)
                          if y > 200 + 40 * i else -2 for y in ROWS])
        frames.append({"lanes": lanes, "h_samples": ROWS, "raw_file": f"clips/0/{i}/20.jpg"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_label.json").write_text("".join(json.dumps(f) + "\n" for f in frames))
    return frames


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_tusimple_perfect_and_perturbed_match_lane_py_rules(tmp_path, capsys):
    frames = _tusimple_labels(tmp_path / "tusimple")
    perfect = _jsonl(tmp_path / "perfect.json", [
        {"raw_file": f["raw_file"], "lanes": f["lanes"], "run_time": 10} for f in frames
    ])
    code, text = run_cli(capsys, "eval", "--predictions", perfect, tmp_path / "tusimple")
    assert code == 0, text
    # The folder's only split is test (test_label.json): the default val falls back to it.
    m = _metrics(tmp_path / "perfect-eval")
    assert m == {"test/tusimple_acc": 1.0, "test/tusimple_fp": 0.0, "test/tusimple_fn": 0.0,
                 "test/tusimple_f1": 1.0}

    # Frame 0: one lane 30 px off (> 20 px / cos); frame 1: a lane dropped and a stray one
    # added; frame 2: too slow (> 200 ms), though perfect.
    pred = [np.asarray(f["lanes"], float) for f in frames]
    p0 = pred[0].copy()
    p0[1] = np.where(p0[1] >= 0, p0[1] + 30, -2)
    p1 = np.concatenate([pred[1][:2], np.full((1, len(ROWS)), 50.0)])
    lanes, times = [p0, p1, pred[2]], [10, 10, 250]
    path = _jsonl(tmp_path / "perturbed.json", [
        {"raw_file": f["raw_file"], "lanes": p.tolist(), "h_samples": ROWS, "run_time": t}
        for f, p, t in zip(frames, lanes, times)
    ])
    code, text = run_cli(capsys, "eval", "--predictions", path, tmp_path / "tusimple" /
                         "test_label.json", "--out", tmp_path / "scores")
    assert code == 0, text
    assert "1 frame(s) with run_time > 200 ms" in text
    # Independent: the per-frame rule on the same arrays, averaged over the labelled frames.
    per = [tusimple_image(p, np.asarray(f["lanes"], float), ROWS, run_time=t)
           for p, f, t in zip(lanes, frames, times)]
    acc, fp, fn = (sum(v[i] for v in per) / 3 for i in range(3))
    assert 0 < acc < 1 and fp > 0 and fn > 0
    m = _metrics(tmp_path / "scores")
    assert m["test/tusimple_acc"] == pytest.approx(acc, abs=1e-12)
    assert m["test/tusimple_fp"] == pytest.approx(fp, abs=1e-12)
    assert m["test/tusimple_fn"] == pytest.approx(fn, abs=1e-12)
    assert m["test/tusimple_f1"] == pytest.approx(tusimple_f1(fp, fn), abs=1e-12)


def test_tusimple_missing_frame_is_a_counted_warning_scored_as_no_lanes(tmp_path, capsys):
    frames = _tusimple_labels(tmp_path / "tusimple")
    path = _jsonl(tmp_path / "two.json", [
        {"raw_file": f["raw_file"], "lanes": f["lanes"], "run_time": 1} for f in frames[:2]
    ])
    code, text = run_cli(capsys, "eval", "--predictions", path,
                         tmp_path / "tusimple" / "test_label.json", "--format", "tusimple")
    assert code == 0, text
    assert "warning: 1 of 3 labelled frames have no prediction line" in text
    assert "clips/0/2/20.jpg" in text
    m = _metrics(tmp_path / "two-eval")
    assert m["test/tusimple_acc"] == pytest.approx(2 / 3)
    assert m["test/tusimple_fn"] == pytest.approx(1 / 3)


def test_tusimple_bad_inputs_are_one_line_errors(tmp_path, capsys):
    frames = _tusimple_labels(tmp_path / "tusimple")
    labels = tmp_path / "tusimple" / "test_label.json"
    good = [json.dumps({"raw_file": f["raw_file"], "lanes": f["lanes"]}) for f in frames]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("\n".join([good[0], good[1][:-5], good[2]]) + "\n")
    before = digest(tmp_path)
    assert_one_line_error(capsys, "eval", "--predictions", bad_json, labels,
                          names=(f"{bad_json}:2", "not a JSON line"))
    assert digest(tmp_path) == before  # nothing written, not even the output folder
    unknown = _jsonl(tmp_path / "unknown.json", [{"raw_file": "clips/9/9.jpg", "lanes": []}])
    assert_one_line_error(capsys, "eval", "--predictions", unknown, labels,
                          names=(f"{unknown}:1", "clips/9/9.jpg", "not in the labels"))
    short = _jsonl(tmp_path / "short.json", [{"raw_file": frames[0]["raw_file"],
                                              "lanes": [[1, 2, 3]]}])
    assert_one_line_error(capsys, "eval", "--predictions", short, labels,
                          names=(f"{short}:1", "lane 0 has 3 x values", "56 h_samples"))
    rows = _jsonl(tmp_path / "rows.json", [{"raw_file": frames[0]["raw_file"], "lanes": [],
                                            "h_samples": ROWS[::-1]}])
    assert_one_line_error(capsys, "eval", "--predictions", rows, labels,
                          names=(f"{rows}:1", "h_samples differ"))
    assert_one_line_error(capsys, "eval", "--predictions", tmp_path / "nope.json", labels,
                          names=("predictions not found", "nope.json"))
    assert_one_line_error(capsys, "eval", "--predictions", unknown, tmp_path / "no-labels",
                          names=("labels not found", "no-labels"))
    # A TuSimple folder with splits but neither val nor test: which one is asked.
    folder = tmp_path / "two-splits"
    folder.mkdir()
    shutil.copy(labels, folder / "label_data_0313.json")
    shutil.copy(labels, folder / "extra.json")
    assert_one_line_error(capsys, "eval", "--predictions", unknown, folder,
                          names=("no 'val' split", "extra, train", "--split"))


# --------------------------------------------------------------------------- CULane
def _culane_labels(tmp_path: Path) -> Path:
    """Two 400x200 images with three lanes each, written by the project's CULane writer."""
    from visbricks.data.formats import write_dataset
    from visbricks.data.io import write_image
    from visbricks.data.lanes import LaneRecord, LaneSet

    src = tmp_path / "src"
    records = []
    for i in range(2):
        file = f"driver_1/clip{i}/00000.png"
        write_image(src / file, np.full((200, 400, 3), 60 + 40 * i, np.uint8))
        lanes = [np.array([[x0 + 20 * i, 190.0], [x0 + 10 + 30 * k, 120.0], [x0 + 30 * k, 60.0]])
                 for k, x0 in enumerate((60.0, 200.0, 340.0))]
        records.append(LaneRecord(file, 400, 200, lanes))
    out = tmp_path / "CULane"
    write_dataset(LaneSet(src, records), out, "culane", split="test")
    return out


def _copy_lines(labels: Path, pred: Path) -> list[str]:
    rels = sorted(p.relative_to(labels).as_posix() for p in labels.rglob("*.lines.txt"))
    for rel in rels:
        (pred / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(labels / rel, pred / rel)
    return rels


def test_culane_perfect_and_perturbed_match_the_culane_metric(tmp_path, capsys):
    from visbricks.data.formats.culane import parse_lines

    labels = _culane_labels(tmp_path)
    perfect = tmp_path / "perfect"
    rels = _copy_lines(labels, perfect)
    assert len(rels) == 2
    code, text = run_cli(capsys, "eval", "--predictions", perfect, labels, "--split", "test")
    assert code == 0, text
    m = _metrics(tmp_path / "perfect-eval")
    assert m == {"test/culane_precision": 1.0, "test/culane_recall": 1.0, "test/culane_f1": 1.0}

    # Image 0: one lane moved 45 px (IoU of 30-px lines < 0.5); image 1: no file (all FN);
    # plus a file for an image the labels do not have.
    pred = tmp_path / "pred"
    _copy_lines(labels, pred)
    gt0 = parse_lines((labels / rels[0]).read_text())
    moved = [ln.copy() for ln in gt0]
    moved[1][:, 0] += 45
    (pred / rels[0]).write_text("".join(" ".join(f"{v:g}" for v in ln.ravel()) + "\n"
                                        for ln in moved))
    (pred / rels[1]).unlink()
    (pred / "driver_9" / "x").mkdir(parents=True)
    (pred / "driver_9" / "x" / "1.lines.txt").write_text("1 2 3 4\n")
    code, text = run_cli(capsys, "eval", "--predictions", pred, labels / "list" / "test.txt")
    assert code == 0, text
    assert "1 of 2 labelled images have no .lines.txt" in text
    assert "1 .lines.txt file(s)" in text and "driver_9/x/1.lines.txt" in text
    gt1 = parse_lines((labels / rels[1]).read_text())
    counts = np.add(culane_image(moved, gt0, (200, 400)), culane_image([], gt1, (200, 400)))
    assert tuple(counts) == (2, 1, 4)
    precision, recall, f1 = prf(*counts)
    m = _metrics(tmp_path / "pred-eval")
    assert m["test/culane_precision"] == pytest.approx(precision)
    assert m["test/culane_recall"] == pytest.approx(recall)
    assert m["test/culane_f1"] == pytest.approx(f1)


def test_culane_bad_inputs_are_one_line_errors(tmp_path, capsys):
    labels = _culane_labels(tmp_path)
    pred = tmp_path / "pred"
    rels = _copy_lines(labels, pred)
    (pred / rels[1]).write_text("10 20 30 40\n10 20 30\n")
    assert_one_line_error(capsys, "eval", "--predictions", pred, labels, "--split", "test",
                          names=(f"{pred / rels[1]}:2", "3 coordinates"))
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "a" / "b.lines.txt").write_text("1 2 3 4\n")
    assert_one_line_error(capsys, "eval", "--predictions", other, labels, "--split", "test",
                          names=(str(other), "matches an image", "driver_1/clip0/00000.lines.txt"))
    assert_one_line_error(capsys, "eval", "--predictions", pred, labels, "--split", "train",
                          names=("no 'train' split", "test"))


# --------------------------------------------------------------------------- COCO
def _coco_labels(path: Path) -> dict:
    """Four 64x64 images, objects of two sparse categories with polygon masks (rectangles)."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(4):
        images.append({"id": 10 + i, "file_name": f"{i}.png", "width": 64, "height": 64})
        for _ in range(3):
            x, y = rng.integers(0, 40, 2).tolist()
            w, h = rng.integers(8, 24, 2).tolist()
            anns.append({
                "id": len(anns) + 1, "image_id": 10 + i, "category_id": [1, 3][len(anns) % 2],
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "car"}, {"id": 3, "name": "person"}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return doc


def _rle(bbox: list[float], size: int = 64) -> dict:
    from pycocotools import mask as mask_utils

    m = np.zeros((size, size), np.uint8)
    x, y, w, h = (int(round(v)) for v in bbox)
    m[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _pycocotools_stats(gt_path: Path, results: list[dict], iou_type: str) -> list[float]:
    """COCOeval of pycocotools itself, on the files as a user has them."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_coco_boxes_and_masks_perfect_and_perturbed_match_pycocotools(tmp_path, capsys):
    from visbricks.metrics.coco import COCO_STAT_NAMES

    gt_path = tmp_path / "coco" / "annotations" / "instances_val.json"
    doc = _coco_labels(gt_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9, "segmentation": _rle(a["bbox"])} for a in doc["annotations"]]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    code, text = run_cli(capsys, "eval", "--predictions", tmp_path / "perfect.json", gt_path)
    assert code == 0, text
    m = _metrics(tmp_path / "perfect-eval")
    assert m["val/AP"] == m["val/AP50"] == m["val/segm_AP"] == m["val/segm_AR100"] == 1.0
    assert len(m) == 24  # the 12 stats, for boxes and for masks

    rng = np.random.default_rng(1)
    perturbed = []
    for k, r in enumerate(perfect):
        box = [v + float(rng.uniform(-4, 4)) for v in r["bbox"][:2]] + r["bbox"][2:]
        if k % 5 == 4:
            continue  # missed
        perturbed.append({**r, "bbox": box, "score": float(rng.uniform(0.2, 1.0)),
                          "segmentation": _rle(box)})
    perturbed.append({"image_id": 11, "category_id": 3, "bbox": [1.0, 1.0, 10.0, 12.0],
                      "score": 0.95, "segmentation": _rle([1, 1, 10, 12])})
    (tmp_path / "perturbed.json").write_text(json.dumps(perturbed))
    code, text = run_cli(capsys, "eval", "--predictions", tmp_path / "perturbed.json",
                         tmp_path / "coco" / "annotations" / "instances_val.json",
                         "--format", "coco", "--out", tmp_path / "scores")
    assert code == 0, text
    m = _metrics(tmp_path / "scores")
    for iou_type, tag in (("bbox", ""), ("segm", "segm_")):
        expected = _pycocotools_stats(gt_path, perturbed, iou_type)
        ours = [m[f"val/{tag}{name}"] for name in COCO_STAT_NAMES]
        assert ours == pytest.approx(expected, abs=1e-12), iou_type
        assert 0 < ours[0] < 1


def test_coco_boxes_only_when_the_labels_have_no_masks(tmp_path, capsys):
    gt_path = tmp_path / "labels" / "gt.json"
    doc = _coco_labels(gt_path)
    for a in doc["annotations"]:
        del a["segmentation"]
    gt_path.write_text(json.dumps(doc))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.5, "segmentation": _rle(a["bbox"])} for a in doc["annotations"]]
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "results.json").write_text(json.dumps(results))
    code, text = run_cli(capsys, "eval", "--predictions", tmp_path / "preds" / "results.json",
                         gt_path)
    assert code == 0, text
    assert "warning: the results have masks but the labels" in text
    m = _metrics(tmp_path / "preds" / "results-eval")
    assert m["val/AP"] == 1.0 and not any("segm" in k for k in m)


def test_coco_results_against_a_dataset_read_by_the_project(tmp_path, capsys):
    """Labels as ``eval`` reads them (a VOC folder: image ids 1..N, categories class id + 1,
    what eval's coco_results.json holds): perfect boxes score AP 1, the val split is used."""
    from visbricks.data.formats import convert, read_dataset
    from visbricks.data.synth.shapes import write_detection
    from visbricks.metrics.coco import coco_gt_dict

    src = write_detection(tmp_path / "det", fmt="coco", n_train=2, n_val=3, width=48, height=48)
    voc = tmp_path / "voc"
    convert(src / "data.yaml", voc, to="voc")
    ds = read_dataset(voc / "data.yaml", split="val")
    # The ground truth eval builds from these records: its ids are the ones results must use.
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.8,
                "bbox": a["bbox"]} for a in coco_gt_dict(ds)["annotations"]]
    assert results
    (tmp_path / "results.json").write_text(json.dumps(results))
    code, text = run_cli(capsys, "eval", "--predictions", tmp_path / "results.json", voc)
    assert code == 0, text
    assert f"{len(ds.records)} images" in text
    m = _metrics(tmp_path / "results-eval")
    assert m["val/AP"] == m["val/AR100"] == 1.0 and "val/segm_AP" not in m


def test_coco_bad_inputs_are_one_line_errors(tmp_path, capsys):
    gt_path = tmp_path / "labels" / "gt.json"
    doc = _coco_labels(gt_path)
    ok = {"image_id": 10, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    cases = [
        ([{**ok, "image_id": 99}], ("image ids not in the labels", "99")),
        ([{**ok, "category_id": 2}], ("category ids [2]", "not in the labels")),
        ([{k: v for k, v in ok.items() if k != "score"}], ("detection 0 lacks score",)),
        ({"annotations": []}, ("COCO annotation file, not results",)),
        ([{**ok, "segmentation": [[1, 2, 3, 4, 5, 6]]}], ("segmentation is a COCO RLE",)),
        ([{**ok, "segmentation": _rle([1, 2, 3, 4], size=32)}], ("mask size [32, 32]",)),
    ]
    for k, (content, names) in enumerate(cases):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps(content))
        assert_one_line_error(capsys, "eval", "--predictions", path, gt_path,
                              names=(str(path), *names))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"image_id": 10,\n')
    assert_one_line_error(capsys, "eval", "--predictions", broken, gt_path,
                          names=(str(broken), "not JSON at line 3"))
    # The wrong format named: a COCO list read as TuSimple lines.
    (tmp_path / "list.json").write_text(json.dumps([ok]))
    assert_one_line_error(capsys, "eval", "--predictions", tmp_path / "list.json", gt_path,
                          "--format", "tusimple", names=("list.json:1", "expected a JSON object"))
    (tmp_path / "not-labels").mkdir()
    shutil.copy(tmp_path / "list.json", tmp_path / "not-labels" / "gt.json")
    assert_one_line_error(capsys, "eval", "--predictions", tmp_path / "list.json",
                          tmp_path / "not-labels" / "gt.json",
                          names=("gt.json", "not a COCO annotation file"))
    assert len(doc["images"]) == 4


# --------------------------------------------------------------------------- masks
CLASSES = ["background", "road", "car"]


def _mask_dataset(root: Path, n: int = 3, ignore: int = 7) -> list[np.ndarray]:
    """A label_masks data YAML (images/val + masks/val, ignore_index 7) written by hand."""
    from visbricks.data.formats.masks import write_mask
    from visbricks.data.io import write_image

    rng = np.random.default_rng(0)
    masks = []
    for i in range(n):
        h, w = 20 + 4 * i, 30  # sizes differ: scored at each label's own resolution
        m = rng.integers(0, 3, (h, w)).astype(np.uint8)
        m[0, :5] = ignore
        write_image(root / "images" / "val" / f"img{i}.jpg", np.zeros((h, w, 3), np.uint8))
        write_mask(root / "masks" / "val" / f"img{i}.png", m)
        masks.append(m)
    (root / "data.yaml").write_text(
        "format: label_masks\nclasses: [background, road, car]\nignore_index: 7\n"
        "val: {images: images/val, masks: masks/val}\n"
    )
    return masks


def _confusion(pairs: list[tuple[np.ndarray, np.ndarray]], c: int, ignore: int) -> np.ndarray:
    """Independent: np.bincount over the kept pixels, rows = truth."""
    m = np.zeros((c, c), np.int64)
    for pred, gt in pairs:
        keep = gt != ignore
        m += np.bincount(gt[keep].astype(int) * c + pred[keep], minlength=c * c).reshape(c, c)
    return m


def test_masks_perfect_and_perturbed_match_a_confusion_matrix(tmp_path, capsys):
    from visbricks.data.formats.masks import write_mask
    from visbricks.data.io import write_image

    masks = _mask_dataset(tmp_path / "data")
    # predict's layout: colour drawings beside masks/ of class-index PNGs at the original size.
    perfect = tmp_path / "preds"
    for i, m in enumerate(masks):
        write_image(perfect / f"img{i}.png", np.zeros((*m.shape, 3), np.uint8))
        write_mask(perfect / "masks" / f"img{i}.png", np.where(m == 7, 0, m))
    code, text = run_cli(capsys, "eval", "--predictions", perfect, tmp_path / "data" / "data.yaml")
    assert code == 0, text
    m = _metrics(tmp_path / "preds-eval")
    assert m["val/mIoU"] == m["val/pixel_acc"] == m["val/IoU_car"] == 1.0
    assert (tmp_path / "preds-eval" / "confusion_matrix.png").is_file()

    rng = np.random.default_rng(3)
    pred = tmp_path / "pred"
    pairs = []
    for i, gt in enumerate(masks[:2]):  # img2 missing
        p = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 3, gt.shape), gt)
        p = np.where(gt == 7, 1, p).astype(np.uint8)
        write_mask(pred / f"img{i}.png", p)
        pairs.append((p, gt))
    write_mask(pred / "stray.png", np.zeros((4, 4), np.uint8))
    code, text = run_cli(capsys, "eval", "--predictions", pred, tmp_path / "data")
    assert code == 0, text
    assert "1 of 3 labelled images have no prediction PNG" in text and "img2.png" in text
    assert "1 prediction PNG(s)" in text and "stray.png" in text
    cm = _confusion(pairs, 3, 7)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    m = _metrics(tmp_path / "pred-eval")
    assert m["val/pixel_acc"] == pytest.approx(tp.sum() / cm.sum())
    assert m["val/mIoU"] == pytest.approx(iou.mean())
    for name, v in zip(CLASSES, iou):
        assert m[f"val/IoU_{name}"] == pytest.approx(v)


def test_masks_plain_label_folder_with_ignore_index(tmp_path, capsys):
    from visbricks.data.formats.masks import write_mask

    gt = np.array([[0, 1, 1, 3], [0, 2, 2, 9]], np.uint8)
    pred = np.array([[0, 1, 2, 3], [1, 2, 2, 9]], np.uint8)
    write_mask(tmp_path / "labels" / "a.png", gt)
    write_mask(tmp_path / "out" / "a.png", pred)
    code, text = run_cli(capsys, "eval", "--predictions", tmp_path / "out", tmp_path / "labels",
                         "--ignore-index", "9")
    assert code == 0, text
    # Classes numbered 0..3 from the values (9 ignored); independent confusion matrix.
    cm = _confusion([(pred, gt)], 4, 9)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    m = _metrics(tmp_path / "out-eval")
    assert m["val/mIoU"] == pytest.approx(iou.mean())
    assert m["val/IoU_class_3"] == 1.0 and m["val/pixel_acc"] == pytest.approx(5 / 7)


def test_masks_bad_inputs_are_one_line_errors(tmp_path, capsys):
    from visbricks.data.formats.masks import write_mask
    from visbricks.data.io import write_image

    masks = _mask_dataset(tmp_path / "data", n=2)
    wrong = tmp_path / "wrong"
    write_mask(wrong / "other.png", masks[0])
    assert_one_line_error(capsys, "eval", "--predictions", wrong, tmp_path / "data",
                          names=(str(wrong), "matches a label", "by file stem"))
    size = tmp_path / "size"
    write_mask(size / "img0.png", np.zeros((5, 5), np.uint8))
    assert_one_line_error(capsys, "eval", "--predictions", size, tmp_path / "data",
                          names=(str(size / "img0.png"), "5x5 prediction", "30x20"))
    rng = tmp_path / "range"
    write_mask(rng / "img0.png", np.full(masks[0].shape, 5, np.uint8))
    assert_one_line_error(capsys, "eval", "--predictions", rng, tmp_path / "data",
                          names=(str(rng / "img0.png"), "outside 0..2", "ignore index 7"))
    colour = tmp_path / "colour"
    write_image(colour / "img0.png", np.zeros((*masks[0].shape, 3), np.uint8))
    assert_one_line_error(capsys, "eval", "--predictions", colour, tmp_path / "data",
                          names=(str(colour / "img0.png"), "not colours"))
    assert_one_line_error(capsys, "eval", "--predictions", colour, tmp_path / "data",
                          "--format", "coco", names=(str(colour), "coco predictions are a file"))


# --------------------------------------------------------------------------- command line
def test_eval_predictions_options_and_outputs(tmp_path, capsys, monkeypatch):
    frames = _tusimple_labels(tmp_path / "tusimple")
    inside = _jsonl(tmp_path / "tusimple" / "mine.json", [
        {"raw_file": f["raw_file"], "lanes": f["lanes"]} for f in frames
    ])
    # Predictions inside the labels folder: the default output goes to the working folder.
    monkeypatch.chdir(tmp_path / "tusimple" / "..")
    code, text = run_cli(capsys, "eval", "--predictions", inside, tmp_path / "tusimple")
    assert code == 0, text
    assert (tmp_path / "mine-eval" / "metrics.json").is_file()
    assert not (tmp_path / "tusimple" / "mine-eval").exists()
    labels = tmp_path / "tusimple"
    assert_one_line_error(capsys, "eval", "--predictions", inside, labels, "--out",
                          labels / "scores", names=("inside the input folder",))
    assert_one_line_error(capsys, "eval", "--predictions", inside, labels, "data.root=x",
                          names=("data.root=x", "does not apply"))
    assert_one_line_error(capsys, "eval", "--predictions", inside, labels, "--ignore-index",
                          "3", names=("--ignore-index", "masks"))
    assert_one_line_error(capsys, "eval", "runs/x", "--format", "coco",
                          names=("--format", "--predictions"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(capsys, "eval", "--predictions", empty, labels,
                          names=(str(empty), "cannot tell the format", "--format"))
    assert_one_line_error(capsys, "eval", "--predictions", inside, labels, "--format", "masks",
                          names=(str(inside), "a folder"))
