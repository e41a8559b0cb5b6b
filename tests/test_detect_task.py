"""The ``detect`` task end to end: data YAML → DetectionDataset → SSD → Trainer → VOC/COCO
metrics → eval/predict, on synthetic shapes written by the project's own generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from conftest import preset_config
from visbricks.cli import main
from visbricks.config import load_config
from visbricks.data.synth.shapes import write_detection
from visbricks.engine.trainer import Trainer
from visbricks.errors import ConfigError, VisbricksError
from visbricks.metrics.voc import evaluate_voc, pairwise_iou
from visbricks.tasks import build_task
from visbricks.tasks.detect import DetectTask

pytestmark = pytest.mark.cost(17)  # seconds here: scheduled early (conftest.py)

NO_AUG = "data.aug={hflip: 0.0, photometric: 0.0, zoom_out: 0.0, iou_crop: 0.0, scale_jitter: null}"


def _same_split_yaml(dataset: Path, name: str = "overfit.yaml") -> Path:
    """A data YAML whose val split is its train split: overfitting is measured on what was seen."""
    split = {"annotations": "annotations/instances_train.json", "images": "images/train"}
    path = dataset / name
    path.write_text(yaml.safe_dump({"format": "coco", "root": ".", "train": split, "val": split}))
    return path


def _config(root: Path, project: Path, *extra: str):
    return preset_config("detect-shapes", root, project, *extra)


@pytest.fixture(scope="module")
def shapes_64(tmp_path_factory) -> Path:
    # 8 images of 64 x 64 with 1-3 shapes each: the "handful" the detector must overfit.
    out = tmp_path_factory.mktemp("det") / "shapes"
    write_detection(out, n_train=8, n_val=4, width=64, height=64, seed=3, objects=(1, 3))
    return out


@pytest.fixture(scope="module")
def overfit_run(shapes_64, tmp_path_factory):
    """A tiny SSD trained through the task and the Trainer on the 8 images it is then scored on."""
    torch.set_num_threads(1)
    cfg = _config(
        _same_split_yaml(shapes_64),
        tmp_path_factory.mktemp("runs"),
        NO_AUG,
        "img_size=64",
        "batch_size=8",
        "epochs=40",
        "train.val_every=1000",
        "optim.lr=0.003",
        "sched.name=onecycle",
        "sched.warmup_epochs=0.0",
        "model.neck_args={out_channels: 32, levels: [1, 2, 3], extra_levels: 0}",
        "model.anchors={smin: 0.15, smax: 0.5}",
        "eval.score_thresh=0.01",
    )
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task=task)
    metrics = trainer.fit()
    return trainer, metrics


@pytest.mark.slow
def test_tiny_ssd_overfits_a_handful_of_images_through_the_trainer(overfit_run) -> None:
    trainer, metrics = overfit_run
    assert metrics["val/mAP50"] >= 0.9, metrics
    # The 11-point and COCO numbers come from the same detections and must tell the same story.
    assert metrics["val/mAP50_07"] >= 0.85, metrics
    assert metrics["val/AP50"] >= 0.85, metrics
    first, last = trainer.history[0]["train/loss"], trainer.history[-1]["train/loss"]
    assert last < 0.2 * first


@pytest.mark.slow
def test_eval_prints_voc_and_coco_tables_and_agrees_with_pycocotools(
    overfit_run, shapes_64, capsys
) -> None:
    trainer, _ = overfit_run
    out = trainer.run_dir / "eval-check"
    assert main(["eval", str(trainer.run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for needle in ("11-point", "all-point", "circle", "AP75", "AR100", "AP_small"):
        assert needle in printed, needle
    for name in ("coco_results.json", "pr_curve.png", "confusion_matrix.png", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())

    # pycocotools on the annotation file as the generator wrote it and on our results JSON.
    gt = COCO(str(shapes_64 / "annotations" / "instances_train.json"))
    dt = gt.loadRes(str(out / "coco_results.json"))
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert metrics["val/AP"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert metrics["val/AP75"] == pytest.approx(ev.stats[2], abs=1e-9)


@pytest.mark.slow
def test_predict_writes_coco_style_boxes_in_original_pixels(overfit_run, shapes_64) -> None:
    from visbricks.deploy.loading import load_run
    from visbricks.deploy.predict import predict

    trainer, _ = overfit_run
    run = load_run(trainer.run_dir)
    gt = json.loads((shapes_64 / "annotations" / "instances_train.json").read_text())
    first = gt["images"][0]
    image = shapes_64 / "images" / "train" / Path(first["file_name"]).name
    out = predict(run, image, trainer.run_dir / "predict")
    [pred] = json.loads((out / "predictions.json").read_text())
    assert (out / f"{image.stem}.png").is_file()
    dets = pred["detections"]
    assert dets and all(set(d) == {"label", "category_id", "bbox", "score"} for d in dets)
    assert all(d["score"] >= run.cfg.eval.conf_thresh for d in dets)
    truth = [a for a in gt["annotations"] if a["image_id"] == first["id"]]

    def xyxy(b):
        return np.array([[x, y, x + w, y + h] for x, y, w, h in b], dtype=np.float64)

    iou = pairwise_iou(xyxy([a["bbox"] for a in truth]), xyxy([d["bbox"] for d in dets]))
    # Every object is found, with its class, where it is in the original image.
    for k, a in enumerate(truth):
        j = int(iou[k].argmax())
        assert iou[k, j] >= 0.5
        assert dets[j]["category_id"] == a["category_id"]


class _Oracle(torch.nn.Module):
    """Predicts each image's targets exactly: its anchors are the letterboxed ground truth."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.targets: dict = {}

    def forward(self, batch: dict) -> dict:
        [boxes], [labels] = batch["boxes"], batch["labels"]
        logits = torch.full((1, len(boxes), self.num_classes + 1), -10.0)
        logits[0, torch.arange(len(boxes)), labels + 1] = 10.0
        return {"cls_logits": logits, "box_deltas": torch.zeros(1, len(boxes), 4), "anchors": boxes}


class _OracleTask(DetectTask):
    def forward(self, model, batch):
        return model(batch)


def test_evaluation_maps_boxes_back_to_original_pixels(tmp_path) -> None:
    # Non-square images, letterboxed to a smaller square canvas: scale != 1 and padding on top.
    data = write_detection(tmp_path / "d", "voc", n_train=3, n_val=6, width=96, height=64, seed=5)
    cfg = _config(data / "data.yaml", tmp_path, "img_size=80", "batch_size=1")
    task = _OracleTask(cfg)
    bundle = task.build_data()
    loader = DataLoader(bundle.val, batch_size=1, collate_fn=bundle.collate_fn)
    metrics = task.evaluate(_Oracle(len(bundle.classes)), loader, torch.device("cpu"), tmp_path)
    assert metrics["val/mAP50"] == pytest.approx(1.0)
    assert metrics["val/mAP50_07"] == pytest.approx(1.0)
    # AP at IoU 0.95 too: the boxes come back within a fraction of a pixel.
    assert metrics["val/AP"] == pytest.approx(1.0)
    results = json.loads((tmp_path / "coco_results.json").read_text())
    assert len(results) == sum(len(r.boxes) for r in bundle.val.dataset.records)
    assert (tmp_path / "pr_curve.png").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    # Records of a VOC dataset all carry image_id 0 when read; evaluation needs them distinct.
    ids = [r.image_id for r in bundle.val.dataset.records]
    assert len(set(ids)) == len(ids)
    assert "11-point" in metrics.table


def test_evaluation_matches_evaluate_voc_on_the_same_detections(tmp_path) -> None:
    # Drop every second object of the oracle's output and jitter the scores: AP < 1, and the
    # task's number must be evaluate_voc's on those detections in original pixels.
    data = write_detection(tmp_path / "d", "coco", n_train=3, n_val=8, width=64, height=96, seed=6)
    cfg = _config(data / "data.yaml", tmp_path, "img_size=64", "batch_size=1")
    task = _OracleTask(cfg)
    bundle = task.build_data()
    records = bundle.val.dataset.records
    gen = torch.Generator().manual_seed(0)

    class Partial(_Oracle):
        def forward(self, batch):
            out = super().forward(batch)
            out["cls_logits"][0, ::2] = torch.randn(out["cls_logits"].shape[1:], generator=gen)[::2]
            return out

    loader = DataLoader(bundle.val, batch_size=1, collate_fn=bundle.collate_fn)
    model = Partial(len(bundle.classes))
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert 0.0 < metrics["val/mAP50"] < 1.0
    # Recompute the detections independently and score them with evaluate_voc directly.
    gen.manual_seed(0)
    preds = []
    for batch in loader:
        out = model(batch)
        preds += task.detections(
            out, batch["image_sizes"], batch["letterbox"], batch["orig_size"], 0.05
        )
    expected = evaluate_voc(preds, records, len(bundle.classes))
    assert metrics["val/mAP50"] == pytest.approx(expected.map)


def test_data_pipeline_batches_and_grouping(tmp_path) -> None:
    data = write_detection(tmp_path / "d", "yolo", n_train=6, n_val=2, width=64, height=48, seed=2)
    cfg = _config(
        data / "data.yaml", tmp_path, "img_size=50", "batch_size=4", "data.group_aspect_ratio=true"
    )
    task = build_task(cfg)
    bundle = task.build_data()
    assert bundle.classes == list(task.classes) and len(bundle.classes) == 6
    batch = bundle.collate_fn([bundle.train[i] for i in range(3)])
    # Letterboxed to 50, padded to the stride: 64 x 64; targets stay per-image lists.
    assert tuple(batch["image"].shape) == (3, 3, 64, 64)
    assert len(batch["boxes"]) == 3 and all(b.shape[1] == 4 for b in batch["boxes"])
    sampler = bundle.batch_sampler(bundle.train, 4, torch.Generator().manual_seed(0))
    # All six images are landscape: one group, one full batch of 4 (the incomplete one dropped).
    [only] = list(sampler)
    assert len(set(only)) == 4 and set(only) <= set(range(6))
    model = task.build_model()
    out = model(batch["image"])
    loss = task.loss(out, batch)
    assert set(loss) == {"loss", "loss_cls", "loss_box", "num_pos"} and torch.isfinite(loss["loss"])


def test_config_errors_name_the_key(tmp_path) -> None:
    data = write_detection(tmp_path / "d", n_train=2, n_val=1, width=32, height=32)
    root = data / "data.yaml"
    bad = {
        "model.anchors.aspect_ratios": "model.anchors={aspect_ratios: [[1.0], [2.0]]}",
        "model.anchors.sizes": "model.anchors={sizes: [[10], [20]]}",
        "model.neck_args": "model.neck_args={channels: 3}",
        "loss.box_loss": "loss.box_loss=l2",
        "data.format": "data.format=voc",
    }
    for key, override in bad.items():
        with pytest.raises(VisbricksError, match=key.replace(".", r"\.")):
            task = build_task(_config(root, tmp_path, override))
            task.build_data()
            task.build_model()
    with pytest.raises(ConfigError, match="data.synth"):
        task = build_task(
            load_config(
                "detect-shapes",
                [f"data.root={tmp_path}/x/data.yaml", "data.synth={kind: shapes, size: 3}"],
            )
        )
        task.build_data()
