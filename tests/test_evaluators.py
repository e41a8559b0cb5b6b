"""Evaluators (metrics/): COCO numbers equal pycocotools' on the same file, scikit-learn's AP,
tie conventions, typed results; the drawing module; atomic writes' permissions; metric_mode;
timm's own pretrained weights; importing visbricks leaves matplotlib's backend alone."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import average_precision_score

from visbricks.data.draw import PALETTE, draw_boxes, draw_lanes, image_grid, overlay_mask
from visbricks.data.formats.coco import read_coco
from visbricks.data.io import write_image
from visbricks.engine.settings import metric_mode
from visbricks.errors import ConfigError
from visbricks.files import atomic_write, atomic_write_text
from visbricks.metrics.base import EvalResult
from visbricks.metrics.classification import (
    ClassificationEvaluator,
    MultiLabelEvaluator,
    average_precision,
    topk_accuracy,
)
from visbricks.metrics.coco import COCO_STAT_NAMES
from visbricks.metrics.detection import DetectionEvaluator

# ---- COCO on a real-style file ---------------------------------------------------------------

# Category ids as COCO itself has them: sparse, not 1..C, not in file order.
_CATS = [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def _coco_file(root: Path, seed: int = 0) -> tuple[Path, list[dict]]:
    """A COCO file whose official numbers differ from naive ones in three ways: sparse
    category ids, ``area`` fields that are not the box area (floats, some across the 32² and
    96² size limits), and boxes crossing the image border. Returns it and detections for it."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in (7, 12, 40, 41, 100):
        w, h = 120, 96
        name = f"im{image_id}.png"
        write_image(root / name, np.zeros((h, w, 3), np.uint8))
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for _ in range(int(rng.integers(2, 5))):
            cat = _CATS[int(rng.integers(0, 3))]["id"]
            bw, bh = float(rng.integers(8, 70)) + 0.5, float(rng.integers(8, 60)) + 0.25
            x = float(rng.integers(0, w - 8))
            y = float(rng.integers(0, h - 8))  # x + bw may pass the right edge: kept as written
            # An area of a mask inside the box: a float, often in another size class than bw*bh.
            area = round(bw * bh * float(rng.uniform(0.3, 0.95)), 3)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": area,
                    "iscrowd": 0,
                }
            )
            # A detection near each object (some exact, some shifted), and a stray one.
            dx, dy = (0.0, 0.0) if rng.random() < 0.4 else rng.normal(0, 4, 2).round(2)
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x + float(dx), y + float(dy), bw, bh],
                    "score": round(float(rng.uniform(0.3, 1.0)), 4),
                }
            )
        dets.append(
            {
                "image_id": image_id,
                "category_id": _CATS[int(rng.integers(0, 3))]["id"],
                "bbox": [float(rng.integers(0, 60)), float(rng.integers(0, 50)), 30.0, 25.0],
                "score": round(float(rng.uniform(0.0, 0.6)), 4),
            }
        )
    path = root / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": _CATS}))
    return path, dets


def _pycocotools_stats(gt_file: Path, dets: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _as_predictions(ds, dets: list[dict]) -> tuple[list[dict], list[int]]:
    """The detections as the toolkit's per-image predictions (class ids, XYXY pixels)."""
    label_of = {cid: c for c, cid in enumerate(ds.category_ids)}
    preds, ids = [], []
    for record in ds.records:
        mine = [d for d in dets if d["image_id"] == record.image_id]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float64),
                "labels": torch.tensor([label_of[d["category_id"]] for d in mine]),
            }
        )
        ids.append(record.image_id)
    return preds, ids


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_evaluation_equals_pycocotools_on_the_same_file(tmp_path, backend):
    gt_file, dets = _coco_file(tmp_path)
    ds = read_coco(gt_file)
    assert any(r.annotated_boxes is not None for r in ds.records)
    # The premise: the file really has boxes past the border and areas unlike the boxes'.
    crossing = [b for r in ds.records for b in r.annotated_boxes if b[2] > r.width]
    assert crossing, "the test file should have a box crossing the right border"
    assert ds.category_ids == [3, 18, 90]

    evaluator = DetectionEvaluator(ds, coco_backend=backend)
    evaluator.update(*_as_predictions(ds, dets))
    result = evaluator.compute()
    expected = _pycocotools_stats(gt_file, dets)
    ours = np.array([result.details["coco"][k] for k in COCO_STAT_NAMES])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert result.metrics["val/AP"] == pytest.approx(expected[0], abs=1e-12)
    # Not a trivial agreement: the sizes and the crossing boxes do matter here.
    assert 0.05 < expected[0] < 0.95 and len(set(np.round(expected[3:6], 6))) > 1

    # coco_results.json carries the file's own category ids: pycocotools scores it the same.
    written = result.plots(tmp_path / "out")
    assert tmp_path / "out" / "coco_results.json" in written
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert {r["category_id"] for r in results} <= {3, 18, 90}
    np.testing.assert_allclose(_pycocotools_stats(gt_file, results), expected, atol=1e-12)


def test_coco_area_and_unclipped_boxes_change_the_numbers(tmp_path):
    # The same evaluation with the areas dropped and the boxes clipped (what the toolkit did
    # before) gives other numbers: the test above could not pass by accident.
    gt_file, dets = _coco_file(tmp_path)
    ds = read_coco(gt_file)
    for r in ds.records:
        r.annotated_boxes, r.areas = None, None
    evaluator = DetectionEvaluator(ds, coco_backend="pycocotools")
    evaluator.update(*_as_predictions(ds, dets))
    naive = evaluator.compute().details["coco"]
    expected = _pycocotools_stats(gt_file, dets)
    assert any(abs(naive[k] - e) > 1e-3 for k, e in zip(COCO_STAT_NAMES, expected))


# ---- classification conventions -----------------------------------------------------------------


def test_multilabel_ap_equals_scikit_learn_with_tied_scores():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(4, 40))
        scores = rng.integers(0, 5, n) / 4.0  # five distinct values: many ties
        positives = rng.random(n) < 0.4
        positives[0] = True
        ours = average_precision(scores, positives)
        assert ours == pytest.approx(average_precision_score(positives, scores), abs=1e-12)


@pytest.mark.filterwarnings("ignore:No positive class found")
def test_multilabel_evaluator_mean_and_a_class_without_positives():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, (30, 3)) / 3.0
    truth = (rng.random((30, 3)) < 0.5).astype(float)
    truth[:, 2] = 0  # no positive at all
    ev = MultiLabelEvaluator(["a", "b", "c"], threshold=0.5)
    ev.update(torch.tensor(scores[:17]), torch.tensor(truth[:17]))
    ev.update(torch.tensor(scores[17:]), torch.tensor(truth[17:]))
    result = ev.compute()
    per_class = average_precision_score(truth, scores, average=None)
    ap = result.details["per_class_ap"]
    assert ap["a"] == pytest.approx(per_class[0]) and ap["b"] == pytest.approx(per_class[1])
    # Documented difference: sklearn gives the class without positives 0 and averages it in;
    # here it is NaN ("n/a") and left out of the mean.
    assert np.isnan(ap["c"]) and per_class[2] == 0.0
    assert result.metrics["val/mAP"] == pytest.approx(per_class[:2].mean())
    assert "n/a" in result.table


def test_topk_ties_go_to_the_lower_class_id():
    logits = torch.zeros(4, 5)  # all tied
    labels = torch.tensor([0, 1, 2, 4])
    acc = topk_accuracy(logits, labels, (1, 2, 3, 5))
    assert acc == {"top1": 0.25, "top2": 0.5, "top3": 0.75, "top5": 1.0}
    # top-1 is argmax, always: the confusion matrix and top1 agree.
    rng = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (200, 6), generator=rng).float()
    labels = torch.randint(0, 6, (200,), generator=rng)
    top1 = topk_accuracy(logits, labels, (1,))["top1"]
    assert top1 == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_classification_evaluator_is_typed_and_split_named(tmp_path):
    ev = ClassificationEvaluator(["x", "y", "z"], topk=2, prefix="test")
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [0, 3, 1], [1, 0, 2]])
    labels = torch.tensor([0, 1, 2, 2])
    ev.add_losses({"loss": torch.tensor(0.5)}, 4)
    ev.update(logits, labels)
    result = ev.compute()
    assert isinstance(result, EvalResult)
    assert set(result.metrics) == {"test/loss", "test/top1", "test/top2", "test/f1_macro"}
    assert result["test/top1"] == 0.75 and result["test/top2"] == 1.0
    assert result.details["confusion_matrix"].tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    result.save(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/top1"] == 0.75
    assert (tmp_path / "confusion_matrix.png").is_file()
    ev.reset()
    assert ev.compute().metrics["test/f1_macro"] == 0.0  # nothing seen after reset


# ---- Trainer: which way the metric improves ----------------------------------------------------


def test_metric_mode_is_given_not_guessed_from_the_name():
    assert metric_mode(None, None, "val/abs_rel", "min") == "min"
    assert metric_mode("val/abs_rel", None, "val/abs_rel", "min") == "min"
    assert metric_mode("val/a1", "max", "val/abs_rel", "min") == "max"
    assert metric_mode("val/abs_rel", "min", "val/mAP50", "max") == "min"
    with pytest.raises(ConfigError, match="train.metric_mode"):
        metric_mode("val/abs_rel", None, "val/mAP50", "max")


# ---- drawing ------------------------------------------------------------------------------------


def test_drawing_uses_one_palette_for_boxes_masks_and_lanes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxed = draw_boxes(image, [[5, 5, 30, 30]], [3], width=1)
    assert tuple(boxed[20, 5]) == PALETTE[3]  # the left edge
    assert boxed.dtype == np.uint8 and boxed.shape == image.shape
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:20] = 3
    mask[0, :] = 255  # ignore: untouched
    overlaid = overlay_mask(image, mask, alpha=1.0)
    assert tuple(overlaid[15, 15]) == PALETTE[3] and overlaid[0].max() == 0
    lanes = draw_lanes(image, [np.array([[30, 35], [30, 5]])], labels=[3], radius=0, width=1)
    assert tuple(lanes[20, 30]) == PALETTE[3]
    grid = image_grid([boxed, overlaid, lanes], titles=["a", "b", "c"], cols=2)
    assert grid.shape[1] > 2 * 60 and grid.shape[0] > 2 * 40


# ---- files and processes ------------------------------------------------------------------------


def test_atomic_writes_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "hi")
        atomic_write(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    with pytest.raises(RuntimeError):

        def fail(tmp: str) -> None:
            Path(tmp).write_text("half")
            raise RuntimeError("disk full")

        atomic_write(tmp_path / "c.txt", fail, suffix=".txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def _in_a_fresh_interpreter(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_importing_visbricks_leaves_matplotlibs_backend_alone():
    out = _in_a_fresh_interpreter(
        "import matplotlib; matplotlib.use('svg'); "
        "import visbricks.cli, visbricks.tasks, visbricks.engine.trainer, visbricks.engine.plots, "
        "visbricks.metrics.detection, visbricks.metrics.depth, visbricks.deploy.predict; "
        "import sys; print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    assert out.split() == ["svg", "False"]


def test_commands_that_draw_nothing_do_not_import_matplotlib():
    # ~0.4 s of every command's start: imported where a figure is drawn, not with the modules
    # that `predict`, `export`, `quantize` and `bench` load.
    out = _in_a_fresh_interpreter(
        "import visbricks.cli, visbricks.tasks, visbricks.engine.trainer, "
        "visbricks.deploy.predict, visbricks.deploy.export, visbricks.deploy.quantize, "
        "visbricks.deploy.bench, visbricks.deploy.loading, visbricks.metrics.detection; "
        "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    assert out.strip() == "[]"


def test_timm_imagenet_goes_through_timms_own_pretrained_mechanism(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")  # a dev dependency; the code path needs it
    from visbricks.config import load_config
    from visbricks.tasks import build_task

    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.normal_(reference.conv1.weight)
    path = tmp_path / "timm-resnet18.pth"
    torch.save(reference.state_dict(), path)
    calls = []
    create = timm.create_model

    def offline_create(name, **kwargs):
        if kwargs.get("pretrained"):
            calls.append(name)  # timm's own loader, pointed at a local file instead of the hub
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        return create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    cfg = load_config(
        "classify-shapes",
        ["model.backbone=timm:resnet18", "model.pretrained=imagenet", "data.classes=[a, b]"],
    )
    model = build_task(cfg).build_model()
    assert calls == ["resnet18"]
    assert torch.equal(model.backbone.body.conv1.weight, reference.conv1.weight)


def test_a_run_is_readable_by_its_owners_group(tmp_path):
    from conftest import tiny_config, write_colour_folder
    from visbricks.engine.trainer import Trainer
    from visbricks.tasks import build_task

    root = write_colour_folder(tmp_path / "colours", n_per_class=4)
    cfg = tiny_config(root, tmp_path / "runs", "epochs=1", "train.plots=true")
    task = build_task(cfg)
    old = os.umask(0o027)
    try:
        trainer = Trainer(cfg, task.build_model(), task.build_data(), task)
        trainer.fit()
    finally:
        os.umask(old)
    written = [p for p in trainer.run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"results.csv", "best.yaml", "best.safetensors", "last.ckpt", "config.yaml"} <= names
    assert {"confusion_matrix.png", "samples.png", "predictions.png"} <= names
    for p in written:
        assert p.stat().st_mode & 0o777 == 0o640, p  # rw owner, r group: the umask, not 0600
    # The typed result of the last validation is kept; its table is the printed report.
    assert "precision" in trainer.last_eval.table
